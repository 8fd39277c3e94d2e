"""attnlab attention: six variants behind one registry.

Public names:

* :data:`REGISTRY` -- variant name -> NNX module class;
* :func:`make` -- build a variant from its typed options;
* :func:`dot_product_attention` -- the pure standard-math kernel (``xla``, ``chunked``,
  ``cudnn``);
* :func:`chunked_attention` -- the online-softmax kernel with pluggable score functions.
"""

from attnlab.models.attention import standard  # noqa: F401  (registers its variants)
from attnlab.models.attention.common import AttentionOptions, apply_rope
from attnlab.models.attention.kernels import NEG, chunked_attention, dot_product_attention
from attnlab.models.attention.registry import REGISTRY, make, options_for

__all__ = [
    "REGISTRY", "make", "options_for", "dot_product_attention", "chunked_attention",
    "AttentionOptions", "apply_rope", "NEG",
]
