"""The committed H = 2 version of table A2 (experiments/icl_regression/README.md): the other
registry variants at H = 2, seed 0 (run into the same directory as a1.py, whose H = 2 runs are
the `standard` row). Superseded by ``a2_h4.py`` (H = 4, every variant, 3 seeds): at H = 2
`standard` itself often sits on the single-head plateau.
``get_config`` is configs/icl_regression.py's."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)

VARIANTS = ("memory_efficient", "uniform_broadcast", "relational", "enhanced_interactive",
            "adaptive_filter")


# adaptive_filter's default complex_dims (H * head_dim / 2 = 6) gives 3 per head, and its
# frequencies come in +-omega pairs: use the authors' sizing, H * head_dim = 12 (6 per head).
EXTRA = {"adaptive_filter": {"attention.options.complex_dims": 12}}


def sweep(add):
  for name in VARIANTS:
    add(arg=f"attention={name}", **{"model.num_heads": 2, "seed": 0}, **EXTRA.get(name, {}))
