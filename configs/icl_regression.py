"""In-context linear regression (He et al., arXiv 2503.12734), \
experiments/icl_regression/README.md §1.

``get_config("attention=standard,heads=2,runlocal")``. Arguments: ``attention`` (variant),
``heads``, ``preset`` (smoke | ablation | default | paper), ``runlocal`` (CPU-size smoke run),
``covariance`` (isotropic | anisotropic), ``multitask`` (the two-task superposition setting of
§1.9: d = 6, L = 48, two outputs, noiseless query labels, H = 3 by default).

Data follows the authors' code, not the notebook prose: beta ~ N(0, I/d), noise variance 0.1,
batch 256 (experiments/icl_regression/README.md §1.1 records the discrepancy).
"""

import ml_collections

from attnlab.configs import common

PRESET_STEPS = {"smoke": 2000, "ablation": 20000, "default": 150000, "paper": 500001}

# The ``:arg`` keys (``attnlab train --help`` lists them).
ARGS = {
    "attention": "variant (default standard)",
    "heads": "number of heads H (default 2; 3 with multitask)",
    "preset": "smoke (2k steps, default) | ablation (20k) | default (150k) | paper (500k)",
    "runlocal": "a 600-step CPU smoke run with 4,000 evaluation prompts",
    "covariance": "isotropic | anisotropic",
    "impl": "attention kernel (xla | chunked | cudnn)",
    "multitask": "the two-task superposition setting (d = 6, L = 48, H = 3)",
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """This study's config; ``arg`` is ``key=value,...`` over :data:`ARGS` (see the module
  docstring), and an unknown key is an error naming the allowed ones."""
  args = common.parse_arg(arg)
  common.check_arg_keys(args, ARGS)
  preset = args.get("preset", "runlocal" if "runlocal" in args else "smoke")
  if preset not in PRESET_STEPS and preset != "runlocal":
    raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESET_STEPS)}")
  c = common.base("icl_regression")
  c.steps = 600 if preset == "runlocal" else PRESET_STEPS[preset]
  c.batch_size = 256
  c.log_every = 100
  # Derived from steps unless set explicitly (``--config.steps=20000`` moves them too).
  c.eval_every = common.derived(c, "steps", lambda steps: max(steps // 4, 1))
  c.optimizer.update(name="adam", lr=1e-3, schedule="constant", warmup_steps=0,
                     weight_decay=0.0, clip_norm=0.0, b2=0.999)
  c.checkpoint.every = common.derived(c, "steps", lambda steps: max(steps // 2, 1))
  c.attention = common.attention_section(args.get("attention", "standard"),
                                         impl=args.get("impl"))
  multitask = "multitask" in args
  c.model = ml_collections.ConfigDict(dict(num_heads=int(args.get("heads", 3 if multitask else 2)),
                                           normalization="softmax"))
  c.data = ml_collections.ConfigDict(dict(d=5, n_context=40, noise_var=0.1,
                                          covariance=args.get("covariance", "isotropic"),
                                          kind="linear"))
  if multitask:  # MultiTaskLinearReg: y1 = b1.x[:4], y2 = b2.x[2:], b_t ~ N(0, I_4)
    c.data.update(d=6, n_context=48, kind="multitask")
  c.eval = ml_collections.ConfigDict(dict(lengths=(48,) if multitask else (10, 20, 40, 100),
                                          prompts=4000 if preset == "runlocal" else 50000))
  return c
