"""H = 2 past the smoke preset: `standard`, 10,000 steps, seeds 0, 1, 4 and 5, the seeds that sit
on the single-head plateau at 2,000 steps (table A1 and `h2_seeds.py`). Checks whether they
leave it given five times the steps (experiments/icl_regression/README.md, "The H = 2 plateau").
``get_config`` is configs/icl_regression.py's."""

from attnlab.configs import icl_regression


def get_config(arg=""):
  """configs/icl_regression.py's, evaluating on the test sets only at the end (every 10,000
  steps, as the runs of results_h2_long did) instead of following ``steps``."""
  c = icl_regression.get_config(arg)
  c.eval_every = 10000
  return c


SEEDS = (0, 1, 4, 5)
"""Plateau seeds at 2,000 steps (MSE@40 0.407-0.409); 4 and 5 were added after 0 and 1."""


def sweep(add):
  for seed in SEEDS:
    add(**{"model.num_heads": 2, "seed": seed, "steps": 10000, "checkpoint.every": 2000})
