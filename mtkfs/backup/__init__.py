"""Backup and restore: ``mtkfs dump``, ``mtkfs export-rom``, ``mtkfs restore``."""
