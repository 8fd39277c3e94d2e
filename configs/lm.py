"""Byte-level language modelling on an offline corpus (experiments/lm_ablation/README.md §3).

``get_config("attention=relational,layout=hybrid,size=cpu")``. Arguments: ``attention``,
``layout`` (uniform | hybrid), ``heads``, ``corpus`` (pydoc | stdlib_src | zen |
synthetic_markov), ``size`` (spec | cpu | runlocal; ``runlocal`` alone also selects the smoke
size), ``impl``.

Sizes (:data:`SIZES`):

* ``spec`` (default, for accelerators): 6 layers, d=256, 8 heads, context 256, 5,000 steps,
  AdamW (0.9, 0.95), weight decay 0.1, lr 1e-3 cosine with 100 warm-up steps, dropout 0.1.
* ``cpu``: table L1 on 2 CPU cores: 4 layers, d=128, 4 heads, context 128, batch 32, on
  ``stdlib_src``, validated on 512 windows (64 KiB of held-out bytes, the same for every run).
* ``runlocal``: a 300-step smoke size (2 layers, d=64) on ``pydoc``.
"""

import ml_collections

from attnlab.configs import common

# The ``:arg`` keys (``attnlab train --help`` lists them).
ARGS = {
    "attention": "variant (default standard)",
    "layout": "uniform | hybrid",
    "heads": "number of heads (default: the size's)",
    "corpus": "pydoc | stdlib_src | zen | synthetic_markov (default: the size's)",
    "size": "spec | cpu | runlocal (default spec)",
    "runlocal": "the 300-step CPU smoke size (2 layers, d = 64); same as size=runlocal",
    "impl": "attention kernel (xla | chunked | cudnn)",
}

SIZES = {
    # steps, batch, lr, warmup, d_model, layers, heads, d_ff, seq_len, dropout, windows, corpus
    "spec": dict(steps=5000, batch_size=32, lr=1e-3, warmup_steps=100, d_model=256,
                 num_layers=6, num_heads=8, d_ff=1024, seq_len=256, dropout=0.1, windows=128,
                 corpus=""),
    "cpu": dict(steps=2500, batch_size=32, lr=2e-3, warmup_steps=100, d_model=128,
                num_layers=4, num_heads=4, d_ff=512, seq_len=128, dropout=0.0, windows=512,
                corpus="stdlib_src"),
    "runlocal": dict(steps=300, batch_size=16, lr=3e-3, warmup_steps=30, d_model=64,
                     num_layers=2, num_heads=4, d_ff=256, seq_len=64, dropout=0.0, windows=32,
                     corpus=""),
}
"""The named sizes; the corpus '' is pydoc."""


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """This study's config; ``arg`` is ``key=value,...`` over :data:`ARGS` (see the module
  docstring), and an unknown key is an error naming the allowed ones."""
  args = common.parse_arg(arg)
  common.check_arg_keys(args, ARGS)
  size = args.get("size", "runlocal" if "runlocal" in args else "spec")
  if size not in SIZES:
    raise ValueError(f"config argument size={size!r} is not allowed; choose one of "
                     f"{sorted(SIZES)}")
  s = SIZES[size]
  c = common.base("lm")
  c.size = size
  c.steps = s["steps"]
  c.batch_size = s["batch_size"]
  c.log_every = 50 if size == "runlocal" else 100
  # Derived from steps unless set explicitly: 500 / 1000 at 5,000 steps, 150 / 150 at 300.
  small = size == "runlocal"
  c.eval_every = common.derived(c, "steps", lambda n: max(n // (2 if small else 10), 1))
  c.checkpoint.every = common.derived(c, "steps", lambda n: max(n // (2 if small else 5), 1))
  c.optimizer.update(lr=s["lr"], warmup_steps=s["warmup_steps"])
  c.attention = common.attention_section(args.get("attention", "standard"),
                                         impl=args.get("impl"),
                                         layout=args.get("layout", "uniform"))
  c.model = ml_collections.ConfigDict(dict(
      d_model=s["d_model"], num_layers=s["num_layers"],
      num_heads=int(args.get("heads", s["num_heads"])), d_ff=s["d_ff"],
      max_len=256, positions="learned", cb_position="none", dropout=s["dropout"],
      dtype="float32", causal=True))
  # corpus '' is pydoc, or the data_files when given (a corpus name and data_files conflict).
  c.data = ml_collections.ConfigDict(dict(corpus=args.get("corpus", s["corpus"]),
                                          data_files=(), val_files=(), seq_len=s["seq_len"]))
  # contexts: extra evaluation contexts (divisors of data.seq_len), logged as bpb@ctx=c (L2).
  c.eval = ml_collections.ConfigDict(dict(windows=s["windows"], batch_size=16,
                                          skip_layers=(), contexts=()))
  return c
