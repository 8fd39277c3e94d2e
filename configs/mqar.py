"""Multi-query associative recall ("Zoology", arXiv 2312.04927), experiments/mqar/README.md §1.

``get_config("attention=standard,d=64,pairs=8")``. Arguments: ``attention`` (variant), ``d``
(d_model, default 64), ``pairs`` (key-value pairs P; sequences are 4 P tokens, default 8),
``heads`` (default 1), ``curriculum`` (1: the first half of the steps on 4 pairs, then
``pairs``; default 0), ``size`` (cpu | runlocal), ``runlocal`` (same as size=runlocal), ``impl``.

Model: the shared LanguageModel, attention-only (2 layers, one head of width d, no MLP,
pre-LN, RoPE positions, tied embeddings, causal, init std 0.8 / sqrt(d): 0.1 at d = 64,
:func:`init_std`) over a 128-token vocabulary
(64 key tokens, 64 value tokens). With the MLP (and init std 0.02 or 0.1), ``standard``
stayed at about 1/P accuracy for 3,000-5,000 steps at P = 4; attention-only with init std 0.1
reached 0.999 in 500 steps, and at P = 8 only one head (not two of width d/2) left the
plateau (experiments/mqar/README.md §1). AdamW, lr 3e-3 with 100 warm-up steps and cosine
decay, no weight decay, 1,000 steps, batch 256 / P sequences (:data:`ANSWERS_PER_STEP`);
fresh sequences every step; 1,000 fixed test sequences per number of pairs.
"""

import math

import ml_collections

from attnlab.configs import common

ARGS = {
    "attention": "variant (default standard)",
    "d": "d_model (default 64)",
    "pairs": "key-value pairs P, sequence length 4 P (default 8)",
    "heads": "attention heads (default 1)",
    "curriculum": "1: train the first half of the steps on 4 pairs, then on `pairs` (default 0)",
    "size": "cpu (the sweep's, default) | runlocal (a short smoke run)",
    "runlocal": "the short smoke size; same as size=runlocal",
    "impl": "attention kernel (xla | chunked | cudnn)",
}

ANSWERS_PER_STEP = 256
"""Batch = ANSWERS_PER_STEP / pairs sequences (at least 4): every step sees 256 answers and
1,024 tokens whatever the number of pairs, so a step costs about the same at every P."""

START_PAIRS = 4
"""The curriculum's first stage (``curriculum=1``): 4 pairs, the largest number every softmax
variant solved from scratch at d = 64 (experiments/mqar/README.md)."""

SIZES = {
    # steps, lr, warmup, eval examples
    "cpu": dict(steps=1000, lr=3e-3, warmup_steps=100, examples=1000),
    "runlocal": dict(steps=200, lr=3e-3, warmup_steps=20, examples=256),
}


def init_std(d: int) -> float:
  """Initialisation std 0.8 / sqrt(d): 0.1 at d = 64, where it was tuned, and the same size of
  initial attention logits at other widths. At d = 128, std 0.1 left `standard` at 0.27 on
  P = 4 after 1,000 steps, std 0.0707 reached 1.000 (experiments/mqar/README.md §3)."""
  return 0.8 / math.sqrt(d)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """This study's config; ``arg`` is ``key=value,...`` over :data:`ARGS` (see the module
  docstring), and an unknown key is an error naming the allowed ones."""
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
  pairs = int(args.get("pairs", 8))
  c.batch_size = max(4, ANSWERS_PER_STEP // pairs)
  c.log_every = 50
  c.eval_every = common.derived(c, "steps", lambda n: max(n // 4, 1))
  c.checkpoint.every = common.derived(c, "steps", lambda n: max(n // 2, 1))
  c.optimizer.update(lr=s["lr"], warmup_steps=s["warmup_steps"], weight_decay=0.0)
  c.attention = common.attention_section(args.get("attention", "standard"),
                                         impl=args.get("impl"))
  c.model = ml_collections.ConfigDict(dict(
      d_model=d, num_layers=2, num_heads=int(args.get("heads", 1)), d_ff=4 * d, max_len=256,
      positions="rope", cb_position="none", dropout=0.0, dtype="float32", init_std=init_std(d),
      use_mlp=False))
  curriculum = args.get("curriculum", "0")
  if curriculum not in ("0", "1"):
    raise ValueError(f"config argument curriculum={curriculum!r} is not allowed; choose 0 or 1")
  start_pairs = min(START_PAIRS, pairs) if curriculum == "1" else 0
  c.data = ml_collections.ConfigDict(dict(pairs=pairs, vocab_size=128, start_pairs=start_pairs))
  c.data.start_steps = (common.derived(c, "steps", lambda n: n // 2) if start_pairs else 0)
  c.eval = ml_collections.ConfigDict(dict(examples=s["examples"]))
  return c
