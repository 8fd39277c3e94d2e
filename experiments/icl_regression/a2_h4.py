"""Table A2 of experiments/icl_regression/README.md at H = 4: every attention mechanism (read from
the registry when the sweep expands, so a newly registered variant joins without an edit) in
place of `standard`, seeds 0, 1, 2. H = 4 because at H = 2 `standard` itself often sits on the
single-head plateau (table A1), which leaves a variant nothing clean to be compared with; at
H = 4 each of the six isotropic `standard` runs committed (A1 seeds 0, 1; A3 seed 0; A6 seeds
0-2) left it by 2,000 steps (MSE@40 0.252-0.254).

A variant that cannot be built at H = 4 with token width d + 1 = 6 is left out with the reason
printed on stderr (`relational` splits the width between its heads, and 4 does not divide 6).
``adaptive_filter`` gets the authors' sizing, complex_dims = H * head_dim = 24 (its default
H * head_dim / 2 = 12 gives 3 complex dimensions per head, and its frequencies come in ±ω
pairs). Run into a directory of its own (it has its own `standard` rows).
``get_config`` is configs/icl_regression.py's."""

import sys

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)

HEADS = 4
SEEDS = (0, 1, 2)
WIDTH = 6  # d + 1: every head's width in He et al.'s model


def left_out(name: str) -> str | None:
  """Why variant ``name`` cannot run at H = HEADS here (None when it can)."""
  from attnlab.models.attention import registry
  if registry.variant(name).heads_span_d_model and WIDTH % HEADS:
    return (f"its heads split the token width d + 1 = {WIDTH} between them, and H = {HEADS} "
            f"does not divide {WIDTH}")
  return None


def extra(name: str) -> dict:
  if name == "adaptive_filter":
    return {"attention.options.complex_dims": HEADS * WIDTH}
  return {}


def variants() -> list[str]:
  """The registered attention mechanisms (the LM ablation's controls left out), `standard`
  first."""
  from attnlab.models.attention import registry
  return sorted(registry.mechanisms(), key=lambda n: (n != "standard", n))


def sweep(add):
  for name in variants():
    why = left_out(name)
    if why:
      print(f"a2_h4.py: {name} left out: {why}", file=sys.stderr)
      continue
    for seed in SEEDS:
      add(arg=f"attention={name}", **{"model.num_heads": HEADS, "seed": seed}, **extra(name))
