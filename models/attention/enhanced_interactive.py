"""Attention variant `enhanced_interactive` (being written; see shared/specs/attention.md)."""
