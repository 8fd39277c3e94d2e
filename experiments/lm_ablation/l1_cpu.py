"""Tables L1 and L2 at the ``cpu`` size (experiments/lm_ablation/README.md): one sweep.

``attnlab sweep --config experiments/lm_ablation/l1_cpu.py --workdir runs/lm_cpu --parallel 1``
trains every row of table L1 on ``stdlib_src`` at configs/lm.py's ``cpu`` size (4 layers,
d = 128, context 128); ``attnlab report runs/lm_cpu`` prints the tables.

Every run is evaluated on the same 512 validation windows (64 KiB), also at contexts 16, 32
and 64 (table L2), and with layers 1 and 3 (0-indexed 0 and 2: a Hybrid's variant layers)
deleted (the Skip column). The rows the paper's claims need (`standard`, the controls of
Deconstructing Attention, :data:`CONTROLS`, and the uniform map alone) run first, every seed,
one seed at a time with `standard` first; then CB in its paper's place and the other variants,
again one seed at a time, with `memory_efficient` (equal to `standard` by construction) last.
So a sweep stopped early leaves the claims' comparisons complete for the seeds it finished, and
all three seeds of them before any variant row's second seed. The order does not change run
names, so reordering never retrains a run. The report pairs runs by seed and, through
each run's ``window_bpb.json``, by validation window; ``attnlab diagnose RUN`` adds a run's
attention diagnostics to it.
"""

from attnlab.configs import lm

VARIANTS = ("standard", "memory_efficient", "uniform_broadcast", "relational",
            "enhanced_interactive", "adaptive_filter")
"""The registry variants of table L1, in table order."""

CONTROLS = ("mlp_control", "taylor_softmax", "token_score_pool", "random_seq_qk",
            "fixed_text_qk", "static_embedding_qk")
"""The controls of Deconstructing Attention (arXiv 2510.11602; models/attention/README.md §9),
in the paper's order (MLP, Approximate, Non-approximate, RndEmbQK, FixedSeqQK, StaticEmbQK);
Uniform and Hybrid, right after `standard` in each seed."""

SEEDS = (0, 1, 2)


def get_config(arg: str = ""):
  """configs/lm.py at the ``cpu`` size, with the Skip and L2 evaluations switched on."""
  c = lm.get_config(f"size=cpu,{arg}" if arg else "size=cpu")
  c.eval.skip_layers = (0, 2)
  c.eval.contexts = (16, 32, 64)
  c.eval_every = 500
  return c


def sweep(add):
  for seed in SEEDS:  # the claims' rows, every seed
    add(arg="attention=standard,layout=uniform", seed=seed)
    for name in CONTROLS:
      for layout in ("uniform", "hybrid"):
        add(arg=f"attention={name},layout={layout}", seed=seed)
    for layout in ("uniform", "hybrid"):
      add(arg=f"attention=uniform_broadcast,layout={layout}", seed=seed,
          **{"attention.options.softmax_heads": False})
  for seed in SEEDS:  # the other rows
    add(arg="attention=standard,layout=uniform", seed=seed, **{"model.cb_position": "mlp_out"})
    others = [v for v in VARIANTS if v not in ("standard", "memory_efficient")]
    for name in others + ["memory_efficient"]:
      for layout in ("uniform", "hybrid"):
        add(arg=f"attention={name},layout={layout}", seed=seed)
