"""LM train-step benchmark: the project's jitted step against plain JAX of identical math.

* ``ratio``: :class:`attnlab.train.loop.Trainer` (a ``configs/lm.py`` config, ``standard``
  attention) against plain-JAX steps written here: token embedding plus learned positions,
  pre-LN blocks (LayerNorm, causal multi-head attention, GELU-tanh MLP with biases), final
  LayerNorm, tied head, mean cross-entropy, and ``clip_by_global_norm`` + AdamW on the
  warm-up-cosine schedule with the run's optimizer settings. Same shapes, dtype, initial
  parameters and batch. Two plain steps differ only in attention (``--plain``): ``jax_nn``
  calls ``jax.nn.dot_product_attention`` (``implementation`` from ``--impl``), ``einsum``
  writes it out (float32 logits, -1e30 mask, softmax, P V: the project's xla math). Before
  timing, three steps of each from the same parameters must give the project's losses (a
  check that the math is identical). All are timed interleaved in one process (``--rounds``
  rounds, the order rotating, of at least ``--steps`` steps and ``--min-round-s`` seconds) to
  share the machine's load; reported per step: median ms, tokens/s, the ratio project / this
  step (median of the per-round ratios) and MFU.
* ``variants``: the project's step for every registered variant (its config's default impl),
  timed round-robin, relative to ``standard``.

Dropout is 0 everywhere (the plain steps have none). MFU counts ``6 N`` FLOPs per token (N: all
parameters but the position table; the tied embedding counts once, as the head's matmul) plus
``12 n_layers T d`` for attention (PaLM's convention, no causal halving) against
``--peak-tflops`` (989: H100 SXM dense bf16).

Examples::

  python experiments/benchmarks/bench_train_step.py --device cpu \\
      --out experiments/benchmarks/results/train_step_cpu.json
  python experiments/benchmarks/bench_train_step.py --device gpu --out /tmp/gpu/train_step.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as ba  # noqa: E402  (same folder: environment, GPU check)

from attnlab.models import attention  # noqa: E402
from attnlab.train import config_loading, loop, settings, sharding  # noqa: E402

# name -> (d_model, num_layers, num_heads, d_ff, seq_len, batch)
SIZES = {
    "cpu_small": (64, 2, 4, 256, 256, 16),   # the runlocal model at T=256
    "l1": (256, 6, 8, 1024, 256, 8),         # table L1's model (batch 8 instead of 32)
    "gpt2_small": (768, 12, 12, 3072, 1024, 32),
    "350m": (1024, 24, 16, 4096, 1024, 16),
    "smoke": (32, 2, 4, 64, 64, 4),
    # Per-variant step tables at T = 1024: the runlocal model (CPU) and 4 GPT-2-small layers
    # (GPU), 4096 and 8192 tokens per step.
    "cpu_t1024": (64, 2, 4, 256, 1024, 4),
    "gpt2_t1024": (768, 4, 12, 3072, 1024, 8),
}

DEFAULTS = {
    "cpu": dict(dtype="float32", sizes="cpu_small,l1", impl="xla", plain="jax_nn,einsum",
                variants="all", variant_size="cpu_small", rounds=5, steps=3, variant_rounds=3,
                variant_steps=2),
    "gpu": dict(dtype="bfloat16", sizes="gpt2_small,350m", impl="cudnn", plain="jax_nn",
                variants="none", variant_size="gpt2_small", rounds=5, steps=5,
                variant_rounds=3, variant_steps=3),
}


# ----------------------------------------------------------------------------------------------
# The project's step.
# ----------------------------------------------------------------------------------------------


class ProjectStep:
  """The Trainer of an ``lm`` config at a given size; ``__call__`` runs one jitted step."""

  def __init__(self, size: str, *, variant: str, impl: str, dtype: str):
    d, n_layers, heads, d_ff, seq_len, batch = SIZES[size]
    impl_arg = "" if impl == "default" else f",impl={impl}"
    spec = f"lm:attention={variant},corpus=synthetic_markov{impl_arg}"
    overrides = {"model.d_model": d, "model.num_layers": n_layers, "model.num_heads": heads,
                 "model.d_ff": d_ff, "model.max_len": seq_len, "model.dropout": 0.0,
                 "model.dtype": dtype, "data.seq_len": seq_len, "batch_size": batch,
                 "eval.windows": 4, "steps": 1000}
    cd = config_loading.get_config(spec, {k: str(v) for k, v in overrides.items()})
    self.run = settings.from_config(cd)
    self.trainer = loop.Trainer(self.run, workdir=None)
    self.model_cfg = self.run.task_settings.model
    self.seq_len, self.batch = seq_len, batch
    self.state, self.rest = self.trainer.init()

  def params_dict(self) -> dict:
    return jax.device_get(nnx.to_pure_dict(self.state["params"]))

  def put_batch(self, tokens: np.ndarray) -> dict:
    local = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    return sharding.global_batch(local, self.trainer.mesh)

  def __call__(self, batch):
    with jax.set_mesh(self.trainer.mesh):  # as Trainer.step does
      self.state, metrics = self.trainer._step(self.state, self.rest, batch)
    return metrics

  def flops(self, batch) -> float | None:
    """FLOPs of one compiled step from XLA's cost analysis (a loop body counts once)."""
    try:
      with jax.set_mesh(self.trainer.mesh):
        ca = self.trainer._step.lower(self.state, self.rest, batch).compile().cost_analysis()
      if isinstance(ca, (list, tuple)):
        ca = ca[0]
      return float(ca["flops"])
    except Exception as e:  # noqa: BLE001  (reported as missing)
      print(f"[variants] no cost analysis: {type(e).__name__}: {e}"[:200], flush=True)
      return None


# ----------------------------------------------------------------------------------------------
# The plain-JAX step (identical math, written without the project's code).
# ----------------------------------------------------------------------------------------------


def plain_params_from(p: dict, num_layers: int) -> dict:
  """The project's initial parameters in the plain model's layout (same values)."""
  blocks = []
  for i in range(num_layers):
    b = p["stack"]["blocks"][i]
    blocks.append({
        "wq": b["attn"]["wq"]["kernel"], "wk": b["attn"]["wk"]["kernel"],
        "wv": b["attn"]["wv"]["kernel"], "wo": b["attn"]["wo"]["kernel"],
        "ln1_s": b["ln1"]["scale"], "ln1_b": b["ln1"]["bias"],
        "ln2_s": b["ln2"]["scale"], "ln2_b": b["ln2"]["bias"],
        "fc1_w": b["mlp"]["fc_in"]["kernel"], "fc1_b": b["mlp"]["fc_in"]["bias"],
        "fc2_w": b["mlp"]["fc_out"]["kernel"], "fc2_b": b["mlp"]["fc_out"]["bias"],
    })
  return {"emb": p["embed"]["embedding"], "pos": p["pos_embed"], "blocks": blocks,
          "lnf_s": p["stack"]["final_ln"]["scale"], "lnf_b": p["stack"]["final_ln"]["bias"]}


def _layer_norm(x, s, b, eps=1e-6):
  xf = x.astype(jnp.float32)
  mu = xf.mean(-1, keepdims=True)
  var = jnp.square(xf - mu).mean(-1, keepdims=True)
  return ((xf - mu) * jax.lax.rsqrt(var + eps) * s + b).astype(x.dtype)


def _linear(x, w, b=None):
  acc = jnp.float32 if x.dtype == jnp.float32 else None
  y = jnp.matmul(x, w.astype(x.dtype), preferred_element_type=acc).astype(x.dtype)
  return y if b is None else y + b.astype(x.dtype)


def jax_nn_attention(q, k, v, *, impl: str):
  """Causal attention through ``jax.nn.dot_product_attention`` (``xla`` or ``cudnn``)."""
  return jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                      implementation=None if impl == "xla" else impl)


def einsum_attention(q, k, v):
  """Causal attention written out: float32 logits, -1e30 above the diagonal, softmax, P V."""
  t, dh = q.shape[1], q.shape[-1]
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  s = s * (1.0 / math.sqrt(dh))
  s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -1e30)
  p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v, preferred_element_type=jnp.float32).astype(v.dtype)


def plain_logits(params, tokens, *, heads: int, dtype, attend):
  """GPT-style decoder forward: float32 logits ``[B, T, vocab]``."""
  bsz, t = tokens.shape
  h = jnp.take(params["emb"], tokens, axis=0).astype(dtype)
  h = h + params["pos"][:t].astype(dtype)[None]
  for blk in params["blocks"]:
    a = _layer_norm(h, blk["ln1_s"], blk["ln1_b"])
    d = a.shape[-1]
    q, k, v = (_linear(a, blk[w]).reshape(bsz, t, heads, d // heads) for w in ("wq", "wk", "wv"))
    o = attend(q, k, v)
    h = h + _linear(o.reshape(bsz, t, d), blk["wo"])
    m = _layer_norm(h, blk["ln2_s"], blk["ln2_b"])
    m = jax.nn.gelu(_linear(m, blk["fc1_w"], blk["fc1_b"]), approximate=True)
    h = h + _linear(m, blk["fc2_w"], blk["fc2_b"])
  h = _layer_norm(h, params["lnf_s"], params["lnf_b"])
  return jnp.einsum("btd,vd->btv", h, params["emb"].astype(h.dtype),
                    preferred_element_type=jnp.float32)


def plain_optimizer(opt, steps: int) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW on a warm-up cosine schedule (the run's numbers)."""
  warmup = min(opt.warmup_steps, max(steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, opt.lr, warmup, max(steps, warmup + 1), end_value=opt.lr * opt.min_lr_ratio)
  return optax.chain(optax.clip_by_global_norm(opt.clip_norm),
                     optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                                 weight_decay=opt.weight_decay))


class PlainStep:
  """A plain ``jax.jit`` train step on a dict of arrays; ``__call__`` runs one step."""

  def __init__(self, params: dict, *, heads: int, dtype: str, impl: str, attention: str,
               opt, steps: int):
    tx = plain_optimizer(opt, steps)
    dt = jnp.dtype(dtype)
    if attention == "jax_nn":
      attend = functools.partial(jax_nn_attention, impl="xla" if impl == "chunked" else impl)
    elif attention == "einsum":
      attend = einsum_attention
    else:
      raise ValueError(f"plain attention {attention!r}: choose jax_nn or einsum")

    def loss_fn(p, batch):
      logits = plain_logits(p, batch["inputs"], heads=heads, dtype=dt, attend=attend)
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    def step(p, opt_state, batch):
      loss, grads = jax.value_and_grad(loss_fn)(p, batch)
      updates, opt_state = tx.update(grads, opt_state, p)
      return optax.apply_updates(p, updates), opt_state, {"loss": loss}

    self.params = jax.device_put(params)
    self.opt_state = tx.init(self.params)
    self._step = jax.jit(step, donate_argnums=(0, 1))

  def put_batch(self, tokens: np.ndarray) -> dict:
    return {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:])}

  def __call__(self, batch):
    self.params, self.opt_state, metrics = self._step(self.params, self.opt_state, batch)
    return metrics


# ----------------------------------------------------------------------------------------------
# Measuring.
# ----------------------------------------------------------------------------------------------


def tokens_for(size: str, seed: int) -> np.ndarray:
  _, _, _, _, t, b = SIZES[size]
  return np.random.default_rng(seed).integers(0, 256, (b, t + 1), dtype=np.int32)


def timed_steps(step, batch, n: int) -> float:
  """ms per step over n steps (dispatch all, then block on the last output)."""
  t0 = time.perf_counter()
  out = None
  for _ in range(n):
    out = step(batch)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) * 1e3 / n


def steps_per_round(minimum: int, step_ms: float, min_round_s: float, cap: int = 100) -> int:
  """At least ``minimum`` steps, and enough for ``min_round_s`` seconds (at most ``cap``)."""
  return max(minimum, min(cap, math.ceil(min_round_s * 1e3 / max(step_ms, 1e-3))))


def param_count(params: dict) -> tuple[int, int]:
  """(all parameters, parameters without the position table)."""
  total = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  return total, total - int(np.size(params["pos_embed"]))


def flops_per_step(size: str, n_params: int) -> float:
  d, n_layers, _, _, t, b = SIZES[size]
  return (6.0 * n_params + 12.0 * n_layers * t * d) * b * t


def run_ratio(size: str, args) -> dict:
  """Project vs the plain steps at ``size``: equality check, then interleaved timing."""
  print(f"[ratio] {size}: building", flush=True)
  proj = ProjectStep(size, variant="standard", impl=args.impl, dtype=args.dtype)
  p0 = proj.params_dict()
  d, n_layers, heads, d_ff, t, b = SIZES[size]
  steps = {"project": proj}
  for attn in args.plain.split(","):
    steps[f"plain_{attn}"] = PlainStep(
        plain_params_from(p0, n_layers), heads=heads, dtype=args.dtype, impl=args.impl,
        attention=attn, opt=proj.run.optimizer, steps=proj.run.steps)
  # Same math: three steps (at lr 0, lr/warmup, 2 lr/warmup) from the same parameters on the
  # same batches give the same losses.
  toks = [tokens_for(size, seed) for seed in (0, 1, 2)]
  losses, first_s = {}, {}
  for name, step in steps.items():
    t0 = time.perf_counter()
    losses[name] = [float(step(step.put_batch(tk))["loss"]) for tk in toks]
    first_s[name] = round(time.perf_counter() - t0, 2)
  tol = 1e-4 if args.dtype == "float32" else 2e-2
  diffs = {name: max(abs(a - c) for a, c in zip(losses["project"], losses[name]))
           for name in steps if name != "project"}
  same = {name: diff <= tol * max(1.0, abs(losses["project"][0]))
          for name, diff in diffs.items()}
  print(f"[ratio] {size}: losses {losses}, same math: {same}", flush=True)

  batches = {name: step.put_batch(toks[0]) for name, step in steps.items()}
  one = 0.0
  for _ in range(max(args.warmup, 1)):
    one = max(timed_steps(step, batches[name], 1) for name, step in steps.items())
  n = steps_per_round(args.steps, one, args.min_round_s)
  rounds = []
  names = list(steps)
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
    got = {name: timed_steps(steps[name], batches[name], n) for name in order}
    rounds.append(got)
    print(f"[ratio] {size} round {r}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in got.items()),
          flush=True)
  n_all, n_mfu = param_count(p0)
  flops = flops_per_step(size, n_mfu)
  out = {"size": size, "d_model": d, "num_layers": n_layers, "num_heads": heads, "d_ff": d_ff,
         "seq_len": t, "batch": b, "dtype": args.dtype, "impl": args.impl, "params": n_all,
         "params_for_flops": n_mfu, "flops_per_step": flops, "losses": losses,
         "max_loss_diff": diffs, "same_math": same, "first_three_steps_s": first_s,
         "steps_per_round": n, "rounds_ms": rounds, "contenders": {}}
  for name in names:
    ms = statistics.median(r[name] for r in rounds)
    out["contenders"][name] = {
        "ms": round(ms, 3), "tokens_per_s": round(b * t / (ms / 1e3), 1),
        "mfu": round(flops / (ms / 1e3) / (args.peak_tflops * 1e12), 4),
        # median of the per-round ratios project / this (1.0 for the project itself)
        "project_ratio": round(statistics.median(r["project"] / r[name] for r in rounds), 4)}
  return out


def run_variants(args, save: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
  """Every registered variant's project step at ``variant_size``, relative to standard.

  ``save(rows)`` is called after each build and each round (a run cut short keeps its rows).
  """
  names = sorted(attention.REGISTRY) if args.variants == "all" else args.variants.split(",")
  names = (["standard"] + [n for n in ("memory_efficient",) if n in names]
           + [n for n in names if n not in ("standard", "memory_efficient")])
  steps, info = {}, {}
  for name in names:
    print(f"[variants] building {name}", flush=True)
    t0 = time.perf_counter()
    try:
      steps[name] = ProjectStep(args.variant_size, variant=name, impl="default",
                                dtype=args.dtype)
      batch = steps[name].put_batch(tokens_for(args.variant_size, 0))
      for _ in range(max(args.warmup, 1)):
        timed_steps(steps[name], batch, 1)
      compile_s = time.perf_counter() - t0
      n = steps_per_round(args.variant_steps, timed_steps(steps[name], batch, 1),
                          args.min_round_s)
      info[name] = {"batch": batch, "compile_s": round(compile_s, 1), "steps_per_round": n,
                    "impl": steps[name].run.config_dict["attention"]["impl"],
                    "params": param_count(steps[name].params_dict())[0]}
      if args.flops:
        info[name]["flops"] = steps[name].flops(batch)
        info[name]["flops_method"] = "xla cost_analysis"
        if info[name]["impl"] == "chunked" and name in SAME_MATH_XLA and \
            SAME_MATH_XLA[name] in info:
          # XLA counts a loop body once: the chunked step's count misses its scan.
          info[name]["flops_loop_body_only"] = info[name]["flops"]
          info[name]["flops"] = info[SAME_MATH_XLA[name]].get("flops")
          info[name]["flops_method"] = f"cost_analysis of {SAME_MATH_XLA[name]}'s step (same math)"
    except Exception as e:  # noqa: BLE001  (recorded, the others go on)
      info[name] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
      steps.pop(name, None)
      print(f"[variants] {name}: {info[name]['error']}", flush=True)
    save(variant_rows(names, info, {}, args))
  times = {name: [] for name in steps}
  rows = variant_rows(names, info, times, args)
  for r in range(args.variant_rounds):
    for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
      times[name].append(timed_steps(steps[name], info[name]["batch"],
                                     info[name]["steps_per_round"]))
    print(f"[variants] round {r}: " + ", ".join(f"{n} {t[-1]:.1f}" for n, t in times.items()),
          flush=True)
    rows = variant_rows(names, info, times, args)
    save(rows)
  return rows


# Variants whose default impl is chunked (loops XLA's cost analysis counts once), and the
# variant whose xla step has the same math.
SAME_MATH_XLA = {"memory_efficient": "standard"}


def variant_rows(names: list[str], info: dict, times: dict, args) -> list[dict]:
  """One row per variant built so far: its build facts and, once timed, ms and ratio."""
  _, _, _, _, t, b = SIZES[args.variant_size]
  base = statistics.median(times["standard"]) if times.get("standard") else None
  rows = []
  for name in [n for n in names if n in info]:
    row = {"variant": name, "size": args.variant_size, "seq_len": t, "batch": b,
           **{k: v for k, v in info[name].items() if k != "batch"}}
    if times.get(name):
      ms = statistics.median(times[name])
      row.update(ms=round(ms, 3), times_ms=[round(x, 3) for x in times[name]],
                 tokens_per_s=round(b * t / (ms / 1e3), 1),
                 relative_to_standard=None if base is None else round(ms / base, 3))
      if len(times.get("standard", [])) == len(times[name]) and times[name]:
        # Per-round ratios (each round times every variant once): robust to load drift.
        row["round_ratios"] = [round(x / y, 3) for x, y in zip(times[name], times["standard"])]
        row["relative_to_standard"] = round(statistics.median(row["round_ratios"]), 3)
      f0 = info.get("standard", {}).get("flops")
      if row.get("flops") and f0:
        row["flops_ratio"] = round(row["flops"] / f0, 3)
        if row.get("relative_to_standard"):
          row["time_per_flop"] = round(row["relative_to_standard"] / row["flops_ratio"], 3)
    rows.append(row)
  return rows


# ----------------------------------------------------------------------------------------------
# Rendering and CLI.
# ----------------------------------------------------------------------------------------------


def render(doc: dict) -> str:
  """Markdown tables of a result document (MFU only where the backend was a GPU)."""
  gpu = doc.get("meta", {}).get("backend") == "gpu"
  lines = []
  if doc.get("ratio"):
    lines += ["| size (d / layers / heads, T x batch) | dtype | attention impl | step | ms/step | "
              "tokens/s | project / this | MFU | same losses as project |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["ratio"]:
      if "error" in r:
        lines.append(f"| {r['size']} | error: {r['error']} | | | | | | | |")
        continue
      size = (f"{r['size']} ({r['d_model']} / {r['num_layers']} / {r['num_heads']}, "
              f"{r['seq_len']} x {r['batch']})")
      for name, c in r["contenders"].items():
        mfu = f"{100 * c['mfu']:.1f}%" if gpu else "-"
        same = ("-" if name == "project" else
                f"{'yes' if r['same_math'][name] else 'NO'} "
                f"(max diff {r['max_loss_diff'][name]:.1e})")
        lines.append(f"| {size} | {r['dtype']} | {r['impl']} | {name} | {c['ms']:.1f} | "
                     f"{c['tokens_per_s']:.0f} | {c['project_ratio']:.3f} | "
                     f"{mfu} | {same} |")
    lines.append("")
  if doc.get("variants"):
    first = doc["variants"][0]
    lines += [f"Size {first['size']}: T = {first['seq_len']}, batch {first['batch']}.", "",
              "| variant | impl | params | ms/step | tokens/s | relative to standard | "
              "GFLOP/step | FLOPs vs standard | time per FLOP vs standard |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["variants"]:
      if "ms" not in r:
        what = f"error: {r['error']}" if "error" in r else "built, not timed"
        lines.append(f"| {r['variant']} | {what} | | | | | | | |")
        continue
      gf = f"{r['flops'] / 1e9:.1f}" if r.get("flops") else "-"
      if r.get("flops_method", "").startswith("cost_analysis of"):
        gf += "¹"
      fr = f"{r['flops_ratio']:.2f}x" if "flops_ratio" in r else "-"
      tpf = f"**{r['time_per_flop']:.2f}**" if "time_per_flop" in r else "-"
      lines.append(f"| {r['variant']} | {r['impl']} | {r['params']:,} | {r['ms']:.1f} | "
                   f"{r['tokens_per_s']:.0f} | {r['relative_to_standard']:.2f}x | {gf} | {fr} | "
                   f"{tpf} |")
    if any(r.get("flops_method", "").startswith("cost_analysis of") for r in doc["variants"]):
      lines.append("\n¹ chunked step: XLA's cost analysis counts a loop body once; FLOPs of the "
                   "same-math xla step (`standard`).")
  return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  p.add_argument("--out", help="result JSON")
  p.add_argument("--render", metavar="JSON", help="print the markdown tables of a result file")
  for field, default in DEFAULTS["cpu"].items():
    p.add_argument("--" + field.replace("_", "-"), type=type(default), default=None,
                   help=f"default: cpu {default!r}, gpu {DEFAULTS['gpu'][field]!r}")
  p.add_argument("--warmup", type=int, default=1,
                 help="untimed steps before timing (the first one compiles)")
  p.add_argument("--min-round-s", type=float, default=1.0,
                 help="more steps per round where --steps would take less than this")
  p.add_argument("--peak-tflops", type=float, default=989.0,
                 help="peak dense bf16 TFLOP/s for MFU (H100 SXM: 989)")
  p.add_argument("--force", action="store_true",
                 help="run --device gpu settings on a non-GPU backend (smoke test only)")
  p.add_argument("--no-flops", dest="flops", action="store_false",
                 help="skip the per-variant FLOP count (one more compile per variant)")
  args = p.parse_args(argv)
  if args.render:
    return args
  if not args.out:
    p.error("--out is required")
  for field, default in DEFAULTS[args.device].items():
    if getattr(args, field) is None:
      setattr(args, field, default)
  for size in [s for s in args.sizes.split(",") if s] + [args.variant_size]:
    if size not in SIZES:
      p.error(f"unknown size {size!r}; choose from {sorted(SIZES)}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  stop = ba.render_or_refuse(args, render)
  if stop is not None:
    return stop
  t_start = time.perf_counter()
  doc = {"meta": dict(ba.environment(), settings={k: v for k, v in vars(args).items()
                                               if k != "render"},
                      command=" ".join(["python"] + sys.argv)),
         "ratio": [], "variants": []}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

  def flush():
    doc["meta"]["loadavg_end"] = list(os.getloadavg())
    doc["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    with open(args.out + ".tmp", "w") as f:
      json.dump(doc, f, indent=1)
    os.replace(args.out + ".tmp", args.out)

  for size in [s for s in args.sizes.split(",") if s]:
    try:
      doc["ratio"].append(run_ratio(size, args))
    except Exception as e:  # noqa: BLE001  (e.g. out of memory; recorded)
      doc["ratio"].append({"size": size, "error": f"{type(e).__name__}: {e}".splitlines()[0]})
      print(f"[ratio] {size}: {doc['ratio'][-1]['error']}", flush=True)
    flush()
  if args.variants != "none":
    def save(rows):
      doc["variants"] = rows
      flush()
    save(run_variants(args, save))
  print(render(doc))
  return 0


if __name__ == "__main__":
  sys.exit(main())
