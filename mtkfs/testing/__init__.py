"""Test doubles shared by the test suite, the demo and ``sim:`` sources.

Everything here produces *real* bytes — disk images made with the same tools a user would point
mtkfs at (sgdisk, mkfs.ext4), or device simulators that speak the real wire protocol — so that a
test passing against them means something for a real phone.
"""
