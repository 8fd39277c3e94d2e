"""The match-to-sample study (experiments/match_to_sample/README.md §2): ``relational`` vs the
parameter-matched ``standard`` × training-set sizes {250, 500, 1000, 2500, 5000} × seeds 0-4.

``attnlab sweep --config experiments/match_to_sample/sweep.py --workdir runs/match_to_sample
--parallel 1``, then ``attnlab report runs/match_to_sample``. Seeds run one at a time.
"""

from attnlab.configs.match_to_sample import get_config  # noqa: F401  (the sweep's config)

VARIANTS = ("relational", "standard")
SIZES = (250, 500, 1000, 2500, 5000)
SEEDS = (0, 1, 2, 3, 4)


def sweep(add):
  for seed in SEEDS:
    for name in VARIANTS:
      for n in SIZES:
        add(arg=f"attention={name},train={n}", seed=seed)
