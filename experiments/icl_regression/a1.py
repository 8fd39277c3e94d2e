"""Table A1 of experiments/icl_regression/README.md (§1.10): `standard` with
H in {1, 2, 4, 8}, seeds 0 and 1. ``get_config`` is configs/icl_regression.py's."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  for heads in (1, 2, 4, 8):
    for seed in (0, 1):
      add(**{"model.num_heads": heads, "seed": seed})
