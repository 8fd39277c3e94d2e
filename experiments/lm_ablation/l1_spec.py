"""Tables L1 and L2 at the ``spec`` size, for an accelerator (experiments/lm_ablation/README.md).

The same 78 runs in the same order as l1_cpu.py (every variant and control, Uniform and Hybrid,
CB in its paper's place, the uniform map alone, seeds 0-2), at configs/lm.py's ``spec`` size
(6 layers, d = 256, 8 heads, context 256, 5,000 steps, dropout 0.1) on ``stdlib_src``.
``experiments/lm_ablation/run_l1_gpu.sh WORKDIR`` runs the sweep, the attention diagnostics
and the report in one command.

Every run is evaluated on the same 256 validation windows of 256 bytes (64 KiB, as at the
``cpu`` size), also at contexts 16, 32, 64 and 128 (table L2), and with layers 0, 2 and 4
deleted (a 6-layer Hybrid's variant layers: the Skip column).
"""

import os

from attnlab.configs import lm
from attnlab.train import config_loading

_CPU = config_loading.load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "l1_cpu.py"))
sweep = _CPU.sweep


def get_config(arg: str = ""):
  """configs/lm.py at the ``spec`` size on ``stdlib_src``, with Skip and L2 switched on."""
  c = lm.get_config(f"size=spec,corpus=stdlib_src,{arg}" if arg else
                    "size=spec,corpus=stdlib_src")
  c.eval.windows = 256
  c.eval.skip_layers = (0, 2, 4)
  c.eval.contexts = (16, 32, 64, 128)
  return c
