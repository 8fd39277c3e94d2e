"""The MQAR study (experiments/mqar/README.md §2): every registered variant × d ∈ {64, 128} ×
pairs ∈ {4, 8, 16, 32, 64}, at configs/mqar.py's ``cpu`` size.

``attnlab sweep --config experiments/mqar/sweep.py --workdir runs/mqar --parallel 1``, then
``attnlab report runs/mqar``. The variants are read from the registry when the sweep expands,
so a newly registered control is included. Runs go one seed at a time (seed 0 complete before
seed 1), so a sweep stopped early leaves whole curves.
"""

from attnlab.configs.mqar import get_config  # noqa: F401  (the sweep's config)
from attnlab.models import attention

WIDTHS = (64, 128)
PAIRS = (4, 8, 16, 32, 64)
SEEDS = (0, 1)


def sweep(add):
  for seed in SEEDS:
    for name in sorted(attention.REGISTRY):
      for d in WIDTHS:
        for pairs in PAIRS:
          add(arg=f"attention={name},d={d},pairs={pairs}", seed=seed)
