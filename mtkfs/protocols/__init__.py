"""Sans-I/O protocol state machines: BROM, Download Agents (and later adb, U-Boot).

See :mod:`mtkfs.protocols.base` for the one convention they all follow.
"""
