"""The MQAR study (experiments/mqar/README.md §2): every registered variant × d ∈ {64, 128} ×
pairs ∈ {4, 8, 16, 32, 64}, at configs/mqar.py's ``cpu`` size, seed 0.

``attnlab sweep --config experiments/mqar/sweep.py --workdir runs/mqar --parallel 1``, then
``attnlab report runs/mqar``. The variants are read from the registry when the sweep expands,
so a newly registered control is included. experiments/mqar/sweep_d64.py and sweep_d128.py
are the same runs split by width (one budget-sized sweep each, same run names: both can
share ``--workdir runs/mqar``); more seeds: ``--config`` a copy with a longer :data:`SEEDS`.
"""

from attnlab.configs.mqar import get_config  # noqa: F401  (the sweep's config)
from attnlab.models import attention

WIDTHS = (64, 128)
PAIRS = (4, 8, 16, 32, 64)
SEEDS = (0,)


def grid(add, widths=WIDTHS, seeds=SEEDS, curriculum=False):
  """One run per (width, seed, variant, pairs), widths outermost (a sweep stopped halfway has
  every seed of the first width), `standard` first; with ``curriculum`` every run trains its
  first half on 4 pairs (configs/mqar.py)."""
  names = sorted(attention.REGISTRY, key=lambda n: (n != "standard", n))
  tail = ",curriculum=1" if curriculum else ""
  for d in widths:
    for seed in seeds:
      for name in names:
        for pairs in PAIRS:
          add(arg=f"attention={name},d={d},pairs={pairs}{tail}", seed=seed)


def sweep(add):
  grid(add)
