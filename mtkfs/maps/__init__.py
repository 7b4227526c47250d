"""Partition maps: pure parsers from bytes or text to :class:`PartitionMap` (no I/O, no trio)."""

from __future__ import annotations

from mtkfs.maps.model import MapReader, Need, Partition, PartitionMap, Region, run_reader

__all__ = ["MapReader", "Need", "Partition", "PartitionMap", "Region", "run_reader"]
