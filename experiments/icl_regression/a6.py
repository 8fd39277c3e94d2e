"""Table A6 of experiments/icl_regression/README.md: out-of-distribution prompts for trained
models at the smoke preset (2,000 steps): `standard` at H = 1, 2, 4, 8 (seeds 0-2; H = 2 seeds
0-4, which split between the single-head plateau and leaving it) and every registry variant at
H = 4 as in table A2 (``a2_h4.py``: seeds 0-2, the same variants left out with the reason
printed). Train with ``attnlab sweep --config experiments/icl_regression/a6.py --workdir
runs/a6``, evaluate each run with ``attnlab ood --workdir runs/a6/<run>`` (train/icl_ood.py,
which writes ``<run>/ood.json``), then ``attnlab report runs/a6`` prints table A6.
``get_config`` is configs/icl_regression.py's."""

import os
import sys

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)
from attnlab.train import config_loading

STANDARD_SEEDS = {1: range(3), 2: range(5), 4: range(3), 8: range(3)}


def _a2_h4():
  """experiments/icl_regression/a2_h4.py (loaded by path: the sweep files are not a package)."""
  return config_loading.load_module(os.path.join(os.path.dirname(__file__), "a2_h4.py"))


def sweep(add):
  for heads, seeds in STANDARD_SEEDS.items():
    for seed in seeds:
      add(**{"model.num_heads": heads, "seed": seed})
  a2 = _a2_h4()
  for name in a2.variants():
    if name == "standard":
      continue  # its H = 4 runs are the rows above
    why = a2.left_out(name)
    if why:
      print(f"a6.py: {name} left out: {why}", file=sys.stderr)
      continue
    for seed in a2.SEEDS:
      add(arg=f"attention={name}", **{"model.num_heads": a2.HEADS, "seed": seed},
          **a2.extra(name))
