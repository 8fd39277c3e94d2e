"""attnlab attention: the variants and the controls of arXiv 2510.11602 behind one registry.

Public names:

* :data:`REGISTRY` -- variant name -> layer class; :func:`spec` / :class:`AttentionSpec` -- a
  checked (name, layout, typed options) choice; :func:`make` / :func:`build` -- a layer;
* :class:`AttentionLayer`, :class:`AttentionOptions` -- the contract every variant implements;
* each variant's pure function (``standard_apply``, ``relational_apply``, ...), all with the
  signature ``apply(params, x, *, num_heads, options=None, causal=False, mask=None,
  positions=None, cache=None, symbols=None)``;
* :func:`dot_product_attention` -- the pure standard-math kernel (``xla``, ``chunked``,
  ``cudnn``); :func:`chunked_attention` -- the online-softmax kernel with pluggable scores.

The math, parameter layout and decisions of each variant are in ``models/attention/README.md``.
"""

# Importing a variant module registers it; one line per module.
from attnlab.models.attention import standard  # noqa: F401
from attnlab.models.attention import enhanced_interactive  # noqa: F401
from attnlab.models.attention import relational  # noqa: F401
from attnlab.models.attention import adaptive_filter  # noqa: F401
from attnlab.models.attention import uniform_broadcast  # noqa: F401
from attnlab.models.attention import controls  # noqa: F401
from attnlab.models.attention import qk_controls  # noqa: F401
from attnlab.models.attention.adaptive_filter import adaptive_filter_apply
from attnlab.models.attention.common import AttentionLayer, AttentionOptions, apply_rope
from attnlab.models.attention.controls import (mlp_control_apply, taylor_softmax_apply,
                                               token_score_pool_apply)
from attnlab.models.attention.enhanced_interactive import enhanced_interactive_apply
from attnlab.models.attention.kernels import NEG, chunked_attention, dot_product_attention
from attnlab.models.attention.registry import (REGISTRY, AttentionSpec, build, make, options_for,
                                               register, spec, variant)
from attnlab.models.attention.qk_controls import (fixed_text_qk_apply, random_seq_qk_apply,
                                                  static_embedding_qk_apply)
from attnlab.models.attention.relational import relational_apply
from attnlab.models.attention.standard import memory_efficient_apply, standard_apply
from attnlab.models.attention.uniform_broadcast import uniform_broadcast_apply

__all__ = [
    "REGISTRY", "AttentionSpec", "spec", "build", "make", "options_for", "register", "variant",
    "AttentionLayer", "AttentionOptions", "dot_product_attention", "chunked_attention",
    "apply_rope", "NEG", "standard_apply", "memory_efficient_apply",
    "enhanced_interactive_apply", "relational_apply", "adaptive_filter_apply",
    "uniform_broadcast_apply", "mlp_control_apply", "taylor_softmax_apply",
    "token_score_pool_apply", "random_seq_qk_apply", "fixed_text_qk_apply",
    "static_embedding_qk_apply",
]
