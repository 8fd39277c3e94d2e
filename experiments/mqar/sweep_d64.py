"""The d = 64 half of the MQAR study (experiments/mqar/README.md §2): every registered variant ×
pairs ∈ {4, 8, 16, 32, 64}, seed 0; run names as in experiments/mqar/sweep.py.

``attnlab sweep --config experiments/mqar/sweep_d64.py --workdir runs/mqar --parallel 1``
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "mqar_sweep", os.path.join(os.path.dirname(os.path.abspath(__file__)), "sweep.py"))
_full = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_full)
get_config = _full.get_config  # the sweep's config


def sweep(add):
  _full.grid(add, widths=(64,))
