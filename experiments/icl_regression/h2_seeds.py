"""H = 2 over more seeds at the smoke preset (2,000 steps): `standard`, seeds 0 to 7, to compare
the fraction of runs that leave the single-head plateau with plateau_reference.py's plain-JAX
runs (experiments/icl_regression/README.md §1.3). ``get_config`` is configs/icl_regression.py's."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  for seed in range(8):
    add(**{"model.num_heads": 2, "seed": seed})
