"""H = 2 past the smoke preset: `standard`, seeds 0 and 1, 10,000 steps
(experiments/icl_regression/README.md §1.3 quotes MSE@40 = 0.245 at 10k steps). Checks whether
the two-head runs that sit on the single-head plateau at 2,000 steps in table A1 leave it.
``get_config`` is configs/icl_regression.py's."""

from attnlab.configs import icl_regression


def get_config(arg=""):
  """configs/icl_regression.py's, with the smoke preset's evaluation interval (500 steps, as
  results_h2_long used) kept fixed instead of following ``steps``."""
  c = icl_regression.get_config(arg)
  c.eval_every = 500
  return c


def sweep(add):
  for seed in (0, 1):
    add(**{"model.num_heads": 2, "seed": seed, "steps": 10000, "checkpoint.every": 2000})
