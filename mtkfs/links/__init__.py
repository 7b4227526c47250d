"""Byte links: USB bulk, serial ttys, pseudo-terminals (no protocol knowledge)."""
