"""The MQAR study with the curriculum (experiments/mqar/README.md §3), d = 64: every registered
variant × pairs ∈ {4, 8, 16, 32, 64}, seed 0, each run's first 500 of 1,000 steps on 4 pairs.

``attnlab sweep --config experiments/mqar/curriculum_d64.py --workdir runs/mqar_curriculum --parallel 1``
"""

import os

from attnlab.train import config_loading

_full = config_loading.load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "sweep.py"))
get_config = _full.get_config  # the sweep's config


def sweep(add):
  _full.grid(add, widths=(64,), curriculum=True)
