"""The d = 64 half of the MQAR study (experiments/mqar/README.md §2): every registered variant ×
pairs ∈ {4, 8, 16, 32, 64}, seed 0; run names as in experiments/mqar/sweep.py.

``attnlab sweep --config experiments/mqar/sweep_d64.py --workdir runs/mqar --parallel 1``
"""

import os

from attnlab.train import config_loading

_full = config_loading.load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "sweep.py"))
get_config = _full.get_config  # the sweep's config


def sweep(add):
  _full.grid(add, widths=(64,))
