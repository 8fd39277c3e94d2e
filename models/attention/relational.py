"""Attention variant `relational` (being written; see shared/specs/attention.md)."""
