"""The runs behind table L2 (experiments/lm_ablation/README.md §3.2): validation bpb against
evaluation context.

``get_config`` is configs/lm.py's (use it at the ``runlocal`` size, context 64); the runs are
table L1's main runs (sweep.py's ``main_runs``: every registry variant, Uniform and Hybrid,
seeds 0, 1 and 2). Launch it with ``'--config.eval.contexts=(8,16,32)'`` so each run is also
evaluated at contexts 8, 16 and 32 (the same validation bytes cut into shorter windows;
experiments/lm_ablation/README.md).
"""

import os

from attnlab.train import config_loading

_L1 = config_loading.load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                              "sweep.py"))
get_config = _L1.get_config  # the sweep's config (configs/lm.py's)
sweep = _L1.main_runs
