"""attnlab.models: attention layers, the shared transformer and task heads (jax/flax only)."""
