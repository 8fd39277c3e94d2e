"""Byte-level language modelling on an offline corpus (experiments/lm_ablation/README.md §3).

``get_config("attention=relational,layout=hybrid,runlocal")``. Arguments: ``attention``,
``layout`` (uniform | hybrid), ``heads``, ``corpus`` (pydoc | stdlib_src | zen |
synthetic_markov), ``runlocal`` (a CPU smoke size), ``impl``.
Default size is table L1's: 6 layers, d=256, 8 heads, context 256, AdamW (0.9, 0.95),
weight decay 0.1, lr 1e-3 cosine with 100 warm-up steps, dropout 0.1.
"""

import ml_collections

from attnlab.configs import common

# The ``:arg`` keys (``attnlab train --help`` lists them).
ARGS = {
    "attention": "variant (default standard)",
    "layout": "uniform | hybrid",
    "heads": "number of heads (default 8; 4 with runlocal)",
    "corpus": "pydoc | stdlib_src | zen | synthetic_markov",
    "runlocal": "a 300-step CPU smoke size (2 layers, d = 64)",
    "impl": "attention kernel (xla | chunked | cudnn)",
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  common.check_arg_keys(args, ARGS)
  runlocal = "runlocal" in args
  c = common.base("lm")
  c.steps = 300 if runlocal else 5000
  c.batch_size = 16 if runlocal else 32
  c.log_every = 50 if runlocal else 100
  # Derived from steps unless set explicitly: 500 / 1000 at 5,000 steps, 150 / 150 at 300.
  c.eval_every = common.derived(c, "steps", lambda s: max(s // (2 if runlocal else 10), 1))
  c.checkpoint.every = common.derived(c, "steps", lambda s: max(s // (2 if runlocal else 5), 1))
  c.optimizer.update(lr=3e-3 if runlocal else 1e-3, warmup_steps=30 if runlocal else 100)
  c.attention = common.attention_section(args.get("attention", "standard"),
                                         impl=args.get("impl"),
                                         layout=args.get("layout", "uniform"))
  c.model = ml_collections.ConfigDict(dict(
      d_model=64 if runlocal else 256, num_layers=2 if runlocal else 6,
      num_heads=int(args.get("heads", 4 if runlocal else 8)), d_ff=256 if runlocal else 1024,
      max_len=256, positions="learned", cb_position="none", dropout=0.0 if runlocal else 0.1,
      dtype="float32", causal=True))
  # corpus '' is pydoc, or the data_files when given (a corpus name and data_files conflict).
  c.data = ml_collections.ConfigDict(dict(corpus=args.get("corpus", ""), data_files=(),
                                          val_files=(), seq_len=64 if runlocal else 256))
  # contexts: extra evaluation contexts (divisors of data.seq_len), logged as bpb@ctx=c (L2).
  c.eval = ml_collections.ConfigDict(dict(windows=32 if runlocal else 128, batch_size=16,
                                          skip_layers=(), contexts=()))
  return c
