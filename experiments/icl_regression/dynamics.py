"""Plot A-P2 of experiments/icl_regression/README.md (§1.6): per-head omega_h and mu_h
over a `default`-preset run (150k steps), for H = 2 and H = 4. Seed 3 for H = 2 is one of the
seeds that leave the single-head plateau (results_h2_seeds: 2 of 8 seeds by 2k steps; seed 0
stays on it for 10k steps), seed 0 for H = 4. ``get_config`` is configs/icl_regression.py's;
pass ``:preset=default``. Each training row logs omega@h / mu@h (train/icl_heads.py)."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  add(**{"model.num_heads": 2, "seed": 3})
  add(**{"model.num_heads": 4, "seed": 0})
