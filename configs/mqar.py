"""Multi-query associative recall ("Zoology", arXiv 2312.04927), experiments/mqar/README.md §1.

``get_config("attention=standard,d=64,pairs=8")``. Arguments: ``attention`` (variant), ``d``
(d_model, default 64), ``pairs`` (key-value pairs P; sequences are 4 P tokens, default 8),
``heads`` (default 2), ``size`` (cpu | runlocal), ``runlocal`` (same as size=runlocal), ``impl``.

Model: the shared LanguageModel (2 layers, learned positions, MLP width 4 d, tied embeddings,
causal) over a 512-token vocabulary (256 key tokens, 256 value tokens). AdamW, lr 1e-3 with
warm-up and cosine decay, batch 64; fresh sequences every step; 1,000 fixed test sequences per
number of pairs.
"""

import ml_collections

from attnlab.configs import common

ARGS = {
    "attention": "variant (default standard)",
    "d": "d_model (default 64)",
    "pairs": "key-value pairs P, sequence length 4 P (default 8)",
    "heads": "attention heads (default 2)",
    "size": "cpu (the sweep's, default) | runlocal (a short smoke run)",
    "runlocal": "the short smoke size; same as size=runlocal",
    "impl": "attention kernel (xla | chunked | cudnn)",
}

SIZES = {
    # steps, batch, lr, warmup, eval examples
    "cpu": dict(steps=2000, batch_size=64, lr=1e-3, warmup_steps=100, examples=1000),
    "runlocal": dict(steps=200, batch_size=32, lr=1e-3, warmup_steps=20, examples=256),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  common.check_arg_keys(args, ARGS)
  size = args.get("size", "runlocal" if "runlocal" in args else "cpu")
  if size not in SIZES:
    raise ValueError(f"config argument size={size!r} is not allowed; choose one of "
                     f"{sorted(SIZES)}")
  s = SIZES[size]
  d = int(args.get("d", 64))
  c = common.base("mqar")
  c.size = size
  c.steps = s["steps"]
  c.batch_size = s["batch_size"]
  c.log_every = 50
  c.eval_every = common.derived(c, "steps", lambda n: max(n // 4, 1))
  c.checkpoint.every = common.derived(c, "steps", lambda n: max(n // 2, 1))
  c.optimizer.update(lr=s["lr"], warmup_steps=s["warmup_steps"])
  c.attention = common.attention_section(args.get("attention", "standard"),
                                         impl=args.get("impl"))
  c.model = ml_collections.ConfigDict(dict(
      d_model=d, num_layers=2, num_heads=int(args.get("heads", 2)), d_ff=4 * d, max_len=256,
      positions="learned", cb_position="none", dropout=0.0, dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(pairs=int(args.get("pairs", 8)), vocab_size=512))
  c.eval = ml_collections.ConfigDict(dict(examples=s["examples"]))
  return c
