"""attnlab attention: six variants behind one registry.

Public names:

* :data:`REGISTRY` -- variant name -> NNX module class;
* :func:`make` -- build a variant from its typed options;
* :func:`dot_product_attention` -- the pure standard-math kernel (``xla``, ``chunked``,
  ``cudnn``);
* :func:`chunked_attention` -- the online-softmax kernel with pluggable score functions.
"""

# Importing a variant module registers it; one line per module.
from attnlab.models.attention import standard  # noqa: F401
from attnlab.models.attention import enhanced_interactive  # noqa: F401
from attnlab.models.attention import relational  # noqa: F401
from attnlab.models.attention import adaptive_filter  # noqa: F401
from attnlab.models.attention import uniform_broadcast  # noqa: F401
from attnlab.models.attention.common import AttentionOptions, apply_rope
from attnlab.models.attention.kernels import NEG, chunked_attention, dot_product_attention
from attnlab.models.attention.registry import REGISTRY, make, options_for

__all__ = [
    "REGISTRY", "make", "options_for", "dot_product_attention", "chunked_attention",
    "AttentionOptions", "apply_rope", "NEG",
]
