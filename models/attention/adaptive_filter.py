"""Attention variant `adaptive_filter` (being written; see shared/specs/attention.md)."""
