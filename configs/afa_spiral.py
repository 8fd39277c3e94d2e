"""Adaptive Filter Attention's spiral-filtering toy (arXiv 2509.04154),
experiments/afa_spiral/README.md §1.

``get_config("attention=adaptive_filter")``. Arguments: ``attention`` (``adaptive_filter``,
``standard`` or any variant; default adaptive_filter), ``runlocal`` (a short smoke run),
``impl``.

Model: ONE causal attention layer, d = 128, 1 head, no MLP, no LayerNorm, no residual around
the layer (the layer is the predictor; AFA keeps its own inner gate). ``adaptive_filter`` runs
with ``next_step=True`` (the authors' filtering toy: the estimate is propagated one step ahead)
and no added positions (its rotations encode time); every other variant gets RoPE positions.
Adam lr 1e-3 (warm-up 50 steps, cosine), batch 32 fresh trajectories a step, 1,000 steps;
1,000 fixed test trajectories.
"""

import ml_collections

from attnlab.configs import common

ARGS = {
    "attention": "variant (default adaptive_filter)",
    "runlocal": "a 200-step smoke run",
    "impl": "attention kernel (xla | chunked | cudnn)",
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """This study's config; ``arg`` is ``key=value,...`` over :data:`ARGS` (see the module
  docstring), and an unknown key is an error naming the allowed ones."""
  args = common.parse_arg(arg)
  common.check_arg_keys(args, ARGS)
  name = args.get("attention", "adaptive_filter")
  c = common.base("afa_spiral")
  c.steps = 200 if "runlocal" in args else 1000
  c.batch_size = 32
  c.log_every = 50
  c.eval_every = common.derived(c, "steps", lambda n: max(n // 4, 1))
  c.checkpoint.every = common.derived(c, "steps", lambda n: max(n // 2, 1))
  c.optimizer.update(name="adam", lr=1e-3, warmup_steps=50, weight_decay=0.0)
  options = dict(next_step=True) if name == "adaptive_filter" else {}
  c.attention = common.attention_section(name, impl=args.get("impl"), **options)
  c.model = ml_collections.ConfigDict(dict(
      d_model=128, num_layers=1, num_heads=1, d_ff=512, max_len=128,
      positions="none" if name == "adaptive_filter" else "rope", cb_position="none",
      dropout=0.0, dtype="float32", causal=True, use_mlp=False, use_norm=False,
      use_residual=False, final_norm=False))
  c.eval = ml_collections.ConfigDict(dict(test_size=200 if "runlocal" in args else 1000))
  return c
