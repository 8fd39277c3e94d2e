"""Table A5 of experiments/icl_regression/README.md (§1.9): multi-task superposition,
`standard` with H in {2, 3, 4, 6} on the two-task data (d = 6, L = 48, two outputs), seeds 1029
(the notebook's), 0 and 1, and seeds 2 and 3 at H = 2, 4 and 6. ``get_config`` is
configs/icl_regression.py's; pass ``:multitask`` (the sweep's arg) and the step count with
``--config.steps``."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)

SEEDS = (1029, 0, 1)
H2_EXTRA_SEEDS = (2, 3)
"""H = 2 ends in one of two solutions (one ± pair serving both tasks, or one head per task with
one shared), so it gets 5 seeds and the report gives each solution its own row."""
SPLIT_EXTRA_SEEDS = {4: (2, 3), 6: (2, 3)}
"""H = 4 and H = 6 also end with different numbers of shared heads over seeds 1029, 0, 1, so they
get seeds 2 and 3 too (5 seeds per split setting)."""


def sweep(add):
  for heads in (2, 3, 4, 6):
    for seed in SEEDS:
      add(**{"model.num_heads": heads, "seed": seed})
  for seed in H2_EXTRA_SEEDS:  # last, so that adding them renamed and reordered nothing
    add(**{"model.num_heads": 2, "seed": seed})
  for heads, seeds in SPLIT_EXTRA_SEEDS.items():  # after those, for the same reason
    for seed in seeds:
      add(**{"model.num_heads": heads, "seed": seed})
