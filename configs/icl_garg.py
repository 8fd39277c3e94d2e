"""Garg et al., in-context learning of linear functions (arXiv 2208.01066), \
experiments/icl_garg/README.md §2.

``get_config("attention=standard,preset=smoke")``. Arguments: ``attention`` (variant), ``preset``
(smoke | cpu | paper), ``size`` (tiny | small | standard; default from the preset), ``runlocal``
(a quick CPU check, smaller than ``smoke``), ``impl``.

Published recipe (dtsip/in-context-learning, ``src/conf``): Adam, lr 1e-4 constant, batch 64,
GPT-2 blocks (pre-LayerNorm, GELU, dropout 0, init std 0.02, 202 learned positions), curriculum
on the dimension (5 -> 20, +1 every 2,000 steps) and on the prompt points (11 -> 41, +2 every
2,000 steps). ``curriculum.dims`` / ``curriculum.points`` are ``(start, end, inc, interval)``;
``start == end`` switches a schedule off.

| preset | model | d | points | curriculum | steps |
|---|---|---|---|---|---|
| smoke | tiny (3/64/2) | 5 | 11 | none | 500 |
| cpu | small (6/128/4) | 10 | 21 | dims 5->10, points 11->21, every 2k | 50k |
| paper | standard (12/256/8) | 20 | 41 | as published | 500k |
"""

import ml_collections

from attnlab.configs import common

# The ``:arg`` keys (``attnlab train --help`` lists them).
ARGS = {
    "attention": "variant (default standard)",
    "preset": "smoke (500 steps, default) | cpu (50k) | paper (500k)",
    "size": "tiny | small | standard (default: the preset's)",
    "runlocal": "a 100-step CPU check, smaller than smoke",
    "impl": "attention kernel (xla | chunked | cudnn)",
}

SIZES = {"tiny": (3, 64, 2), "small": (6, 128, 4), "standard": (12, 256, 8)}
PRESETS = {
    # model, d, points, dims schedule, points schedule, steps
    "runlocal": ("tiny", 5, 11, (5, 5, 1, 2000), (11, 11, 2, 2000), 100),
    "smoke": ("tiny", 5, 11, (5, 5, 1, 2000), (11, 11, 2, 2000), 500),
    "cpu": ("small", 10, 21, (5, 10, 1, 2000), (11, 21, 2, 2000), 50_000),
    "paper": ("standard", 20, 41, (5, 20, 1, 2000), (11, 41, 2, 2000), 500_000),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """This study's config; ``arg`` is ``key=value,...`` over :data:`ARGS` (see the module
  docstring), and an unknown key is an error naming the allowed ones."""
  args = common.parse_arg(arg)
  common.check_arg_keys(args, ARGS)
  preset = args.get("preset", "runlocal" if "runlocal" in args else "smoke")
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
  size, d, points, dims_sched, points_sched, steps = PRESETS[preset]
  size = args.get("size", size)
  if size not in SIZES:
    raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
  layers, width, heads = SIZES[size]
  c = common.base("icl_garg")
  c.steps = steps
  c.batch_size = 64
  c.log_every = 50 if steps <= 5000 else 500
  # Derived from steps unless set explicitly (the presets' values are unchanged).
  c.eval_every = common.derived(c, "steps", lambda s: max(s // 5, 1) if s <= 5000 else 10_000)
  c.optimizer.update(name="adam", lr=1e-4, schedule="constant", warmup_steps=0,
                     weight_decay=0.0, clip_norm=0.0, b2=0.999)
  c.checkpoint.every = common.derived(c, "steps",
                                     lambda s: max(s // 2, 1) if s <= 5000 else 10_000)
  c.attention = common.attention_section(args.get("attention", "standard"),
                                         impl=args.get("impl"))
  c.model = ml_collections.ConfigDict(dict(
      d_model=width, num_layers=layers, num_heads=heads, d_ff=4 * width, max_len=202,
      positions="learned", cb_position="none", dropout=0.0, dtype="float32", init_std=0.02))
  c.data = ml_collections.ConfigDict(dict(d=d, n_points=points))
  c.curriculum = ml_collections.ConfigDict(dict(dims=dims_sched, points=points_sched))
  c.eval = ml_collections.ConfigDict(dict(points=2 * d + 1,
                                          prompts=256 if preset == "runlocal" else 1280,
                                          batch_size=256))
  return c
