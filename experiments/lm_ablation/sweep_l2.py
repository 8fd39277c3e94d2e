"""The runs behind table L2 (studies.md §3.2): validation bpb against evaluation context.

``get_config`` is configs/lm.py's (use it at the ``runlocal`` size, context 64); every registry
variant, Uniform and Hybrid, seeds 0, 1 and 2: the L1 sweep's main runs. Launch it with
``'--config.eval.contexts=(8,16,32)'`` so each run is also evaluated at contexts 8, 16 and 32
(the same validation bytes cut into shorter windows; experiments/lm_ablation/README.md).
"""

from attnlab.configs.lm import get_config  # noqa: F401  (the sweep's config)

VARIANTS = ("standard", "memory_efficient", "uniform_broadcast", "relational",
            "enhanced_interactive", "adaptive_filter")


def sweep(add):
  for seed in (0, 1, 2):
    for name in VARIANTS:
      for layout in ("uniform", "hybrid"):
        add(arg=f"attention={name},layout={layout}", seed=seed)
