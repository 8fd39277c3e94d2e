"""Relational match-to-sample (Dual Attention Transformer, arXiv 2405.16727),
experiments/match_to_sample/README.md §1.

``get_config("attention=relational,train=1000")``. Arguments: ``attention`` (``relational``,
``standard`` or any variant; default relational), ``train`` (training-set size, default 1000),
``runlocal`` (a short smoke run), ``impl``.

Model: 2 layers, d = 64, 4 heads, MLP width 4 d, init std 0.1 (non-causal, learned positions),
read-out ``compare``: each candidate triple scored by a shared MLP of the source's and the
candidate's mean outputs (``model.readout=mean`` is the old mean-of-nine, linear 2-way head).
``relational`` uses 2 sensory + 2 relational heads with symmetric relations and
position-relative symbols (:data:`RELATIONAL_OPTIONS`); every other variant gets the MLP width
that matches the relational model's parameter count (``model.match_params``). Objects: a pool of
64 Gaussian vectors of width 16 per seed. AdamW lr 1e-3, batch 64, 2,000 steps (epochs over the
fixed training set), 5,000 test examples. ``data.fresh=True`` (a diagnostic) draws new examples
every step instead.
"""

import ml_collections

from attnlab.configs import common

ARGS = {
    "attention": "variant (default relational)",
    "train": "training-set size (default 1000)",
    "runlocal": "a 300-step smoke run",
    "impl": "attention kernel (xla | chunked | cudnn)",
}

RELATIONAL_OPTIONS = dict(sa_heads=2, ra_heads=2, n_relations=2, rel_proj_dim=16,
                          symmetric_rels=True, symbol_type="position_relative", max_rel_pos=2)
"""Dual attention: half sensory, half relational heads (R * dr = H_ra * dh = 32 at d = 64, 4
heads), symmetric relations and position-relative symbols (offsets -2..2), so that a token's
relations to its triple-mates are written in the same symbol directions in the source and in
both candidates (experiments/match_to_sample/README.md §3; absolute positional symbols stayed at
chance)."""


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """This study's config; ``arg`` is ``key=value,...`` over :data:`ARGS` (see the module
  docstring), and an unknown key is an error naming the allowed ones."""
  args = common.parse_arg(arg)
  common.check_arg_keys(args, ARGS)
  name = args.get("attention", "relational")
  c = common.base("match_to_sample")
  c.steps = 300 if "runlocal" in args else 2000
  c.batch_size = 64
  c.log_every = 50
  c.eval_every = common.derived(c, "steps", lambda n: max(n // 4, 1))
  c.checkpoint.every = common.derived(c, "steps", lambda n: max(n // 2, 1))
  c.optimizer.update(lr=1e-3, warmup_steps=100)
  options = RELATIONAL_OPTIONS if name == "relational" else {}
  c.attention = common.attention_section(name, impl=args.get("impl"), **options)
  match = "" if name == "relational" else "relational"
  c.model = ml_collections.ConfigDict(dict(
      d_model=64, num_layers=2, num_heads=4, d_ff=256, max_len=16, positions="learned",
      cb_position="none", dropout=0.0, dtype="float32", init_std=0.1, match_params=match,
      match_options=ml_collections.ConfigDict(RELATIONAL_OPTIONS if match else {}),
      use_mlp=True, readout="compare", segments=False))
  c.data = ml_collections.ConfigDict(dict(pool_size=64, object_dim=16,
                                          train_size=int(args.get("train", 1000)),
                                          fresh=False))
  c.eval = ml_collections.ConfigDict(dict(test_size=1000 if "runlocal" in args else 5000))
  return c
