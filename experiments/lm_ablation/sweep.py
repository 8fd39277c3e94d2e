"""The runs behind experiments/lm_ablation/README.md (§3.2, table L1).

``get_config`` is configs/lm.py's (use it at the ``runlocal`` size); every registry variant,
Uniform and Hybrid, seeds 0, 1 and 2, one complete seed after the other (the order lets a short
session stop after a complete seed). Pass ``--config.eval.skip_layers=(0,)`` so every run also
reports the Skip evaluation (layer 0 is the Hybrid's variant layer at 2 layers).

Then the Context Broadcasting paper's own placement (experiments/lm_ablation/README.md §3.2):
`standard` attention with CB at the end of every block's MLP branch
(``model.cb_position=mlp_out``), Uniform, 3 seeds;
and the spec's control row: the uniform map alone, without softmax heads
(``attention.options.softmax_heads=False`` of `uniform_broadcast`), Uniform and Hybrid, 3 seeds.
"""

from attnlab.configs.lm import get_config  # noqa: F401  (the sweep's config)

VARIANTS = ("standard", "memory_efficient", "uniform_broadcast", "relational",
            "enhanced_interactive", "adaptive_filter")


def main_runs(add):
  """Table L1's main runs: every variant, Uniform and Hybrid, one complete seed after the other
  (also the runs of table L2, sweep_l2.py)."""
  for seed in (0, 1, 2):
    for name in VARIANTS:
      for layout in ("uniform", "hybrid"):
        add(arg=f"attention={name},layout={layout}", seed=seed)


def sweep(add):
  main_runs(add)
  for seed in (0, 1, 2):
    add(arg="attention=standard,layout=uniform", seed=seed, **{"model.cb_position": "mlp_out"})
  for seed in (0, 1, 2):
    for layout in ("uniform", "hybrid"):
      add(arg=f"attention=uniform_broadcast,layout={layout}", seed=seed,
          **{"attention.options.softmax_heads": False})
