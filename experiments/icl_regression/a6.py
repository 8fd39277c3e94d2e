"""Table A6 of experiments/icl_regression/README.md: out-of-distribution prompts for trained
`standard` models, H = 1 and 4, seeds 0, 1, 2, at the smoke preset (2,000 steps). Train with
``attnlab sweep --config experiments/icl_regression/a6.py --workdir runs/a6``, then evaluate
each run with ``attnlab ood --workdir runs/a6/<run>`` (train/icl_ood.py)."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  for heads in (1, 4):
    for seed in (0, 1, 2):
      add(**{"model.num_heads": heads, "seed": seed})
