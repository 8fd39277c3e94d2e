"""Table A2 of experiments/icl_regression/README.md: the other registry variants at H = 2,
seed 0 (run into the same directory as a1.py, whose H = 2 runs are the `standard` row).
``get_config`` is configs/icl_regression.py's."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)

VARIANTS = ("memory_efficient", "uniform_broadcast", "relational", "enhanced_interactive",
            "adaptive_filter")


def sweep(add):
  for name in VARIANTS:
    add(arg=f"attention={name}", **{"model.num_heads": 2, "seed": 0})
