"""Byte links: USB bulk, serial ttys, pseudo-terminals, in-memory pipes (no protocol knowledge)."""
