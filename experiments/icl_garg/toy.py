"""Table B1 at Garg et al.'s ``toy.yaml`` length: the smoke preset's data (d = 5, 11 points, no
curriculum) and tiny model (3 layers, width 64, 2 heads) trained for 5,000 steps (lr 1e-4, batch
64, as published), every registry variant but `memory_efficient`, seeds 0, 1, 2, and seeds 3, 4
of the variants whose seeds split between the two modes (:data:`BIMODAL`). Table B2 evaluates
the same runs with ``attnlab ood``.
``get_config`` is configs/icl_garg.py's with the evaluation and checkpoint intervals fixed."""

from attnlab.configs import icl_garg


def get_config(arg=""):
  """configs/icl_garg.py's, with evaluation and checkpoints every 1,000 steps and the training
  loss logged every 100 (the committed runs of results_toy used these), whatever ``steps``."""
  c = icl_garg.get_config(arg)
  c.eval_every, c.log_every, c.checkpoint.every = 1000, 100, 1000
  return c

# `standard` first, the slowest variants (on CPU) last. `memory_efficient` is left out: it
# equals `standard` (table B1 at the smoke preset checks it: largest difference 6.7e-9 over seeds 0-2).
VARIANTS = ("standard", "uniform_broadcast", "adaptive_filter", "relational",
            "enhanced_interactive")


SEEDS = (0, 1, 2)

BIMODAL = ("uniform_broadcast", "enhanced_interactive")
"""Variants whose seeds 0-2 ended on both sides of the plateau after 5,000 steps (some seeds left
it, some did not: train/report/icl_plateau.py's Garg rule); they get two more seeds, so each
mode's mean rests on more than one run (5 seeds, as for H = 2 in experiments/icl_regression)."""
BIMODAL_EXTRA_SEEDS = (3, 4)


def sweep(add):
  for seed in SEEDS:  # seed 0 of every variant first: a partial sweep still covers them all
    for name in VARIANTS:
      add(arg=f"attention={name}", steps=5000, seed=seed)
  for seed in BIMODAL_EXTRA_SEEDS:  # after every seed-2 run: run names never change
    for name in BIMODAL:
      add(arg=f"attention={name}", steps=5000, seed=seed)
