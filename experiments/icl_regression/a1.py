"""Table A1 of experiments/icl_regression/README.md (§1.10): `standard` with H in {1, 2, 4, 8},
seeds 0-2 (0-4 for H = 2, whose seeds split between the single-head plateau and leaving it, so
the report gives each mode with its n). ``get_config`` is configs/icl_regression.py's."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)

SEEDS = {1: range(3), 2: range(5), 4: range(3), 8: range(3)}


def sweep(add):
  for heads, seeds in SEEDS.items():
    for seed in seeds:
      add(**{"model.num_heads": heads, "seed": seed})
