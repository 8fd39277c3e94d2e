"""The MQAR study with the curriculum (experiments/mqar/README.md §3): every registered variant ×
d ∈ {64, 128} × pairs ∈ {4, 8, 16, 32, 64} × seeds 0, 1, 2, each run's first 500 of 1,000
steps on 4 pairs; d = 64 (all seeds) first, so a sweep stopped halfway has one whole width.

``attnlab sweep --config experiments/mqar/curriculum.py --workdir runs/mqar_curriculum --parallel 1``
"""

import os

from attnlab.train import config_loading

_full = config_loading.load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "sweep.py"))
get_config = _full.get_config  # the sweep's config


def sweep(add):
  _full.grid(add, seeds=(0, 1, 2), curriculum=True)
