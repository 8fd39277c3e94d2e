"""Attention variant `uniform_broadcast` (being written; see shared/specs/attention.md)."""
