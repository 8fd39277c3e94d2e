"""The spiral-filtering study (experiments/afa_spiral/README.md §2): one ``adaptive_filter``
layer vs one ``standard`` layer, seeds 0-4, at configs/afa_spiral.py's default size.

``attnlab sweep --config experiments/afa_spiral/sweep.py --workdir runs/afa_spiral --parallel 1``,
then ``attnlab report runs/afa_spiral``.
"""

from attnlab.configs.afa_spiral import get_config  # noqa: F401  (the sweep's config)

VARIANTS = ("adaptive_filter", "standard")
SEEDS = (0, 1, 2, 3, 4)


def sweep(add):
  for seed in SEEDS:
    for name in VARIANTS:
      add(arg=f"attention={name}", seed=seed)
