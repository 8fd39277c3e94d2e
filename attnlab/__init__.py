"""attnlab: attention variants as JAX/Flax NNX layers (``attnlab.models``), and the trainer,
CLI and study configs (``attnlab.train``, ``attnlab.configs``; ``pip install 'attnlab[train]'``).
"""

__version__ = "0.1.0"
