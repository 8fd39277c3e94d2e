"""Time per FLOP of every attention layer relative to ``standard`` (interleaved rounds).

For each length and each (variant, impl) it compiles the layer's forward+backward (gradient of
``sum(y)`` w.r.t. the parameters and x, as ``bench_attention.py``'s ``fwdbwd``) and records:

* ``flops``: ``compiled.cost_analysis()['flops']`` of the compiled step. XLA's cost analysis
  counts a ``while`` loop's body once, so for ``chunked`` impls (``lax.scan`` / ``lax.map``)
  it cannot see the work; their ``flops`` is the same variant's ``xla`` step's count (same math,
  counted by XLA; ``flops_method`` says which). The chunked backward pass also recomputes its
  tiles (checkpointing), which this count leaves out: it is the useful work.
* ``temp_mib``: compiled temporary memory.
* time: ``--rounds`` rounds; each round runs ``standard/xla`` and every case once (the order
  reversing each round), so all cases share the machine's load of that moment. Per case: the
  median of its per-round ratios to ``standard`` (``time_ratio``) and ``time_per_flop`` =
  ``time_ratio / flops_ratio``.

A case is not timed if its run needs more than ``--max-mem-frac`` of the free memory or more
than ``--max-mem-gib``; its FLOPs and memory are still recorded.

Example::

  python experiments/benchmarks/bench_perflop.py --lengths 1024 \\
      --out experiments/benchmarks/results/perflop_cpu.json
  python experiments/benchmarks/bench_perflop.py --render \\
      experiments/benchmarks/results/perflop_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as ba  # noqa: E402  (same folder)

from attnlab.models import attention  # noqa: E402

DEFAULT_CASES = ("standard/xla,memory_efficient/chunked,uniform_broadcast/xla,relational/xla,"
                 "enhanced_interactive/xla,enhanced_interactive/chunked,adaptive_filter/xla,"
                 "adaptive_filter/chunked")


# Variants without an xla impl: the variant whose xla step has the same math.
SAME_MATH = {"memory_efficient": "standard"}


def flops_of(compiled) -> float | None:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  return None if not ca or "flops" not in ca else float(ca["flops"])


def once_ms(compiled, args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  return (time.perf_counter() - t0) * 1e3


def build(name: str, impl: str, length: int, args):
  fns, params, rest = ba.layer_fns(name, impl, d_model=args.d_model, heads=args.heads,
                                   causal=True, dtype=args.dtype)
  x = jax.random.normal(jax.random.key(length), (args.batch, length, args.d_model), jnp.float32)
  real = (params, rest, x)
  compiled = ba.compile_fn(fns[args.mode], real)
  return compiled, real


def run_length(length: int, cases: list[tuple[str, str]], args, rows: list, save) -> None:
  built, info = {}, {}
  xla_flops = {}
  for name, impl in cases:
    key = f"{name}/{impl}"
    row = dict(case=key, variant=name, impl=impl, L=length, mode=args.mode,
               d_model=args.d_model, heads=args.heads, batch=args.batch, dtype=args.dtype)
    t0 = time.perf_counter()
    try:
      compiled, real = build(name, impl, length, args)
    except Exception as e:  # noqa: BLE001
      row["error"] = "compile: " + ba.short_error(e)
      info[key] = row
      continue
    row["compile_s"] = round(time.perf_counter() - t0, 1)
    row["temp_mib"] = round((ba.temp_bytes(compiled) or 0) / ba.MIB, 1)
    if impl == "xla":
      row["flops"], row["flops_method"] = flops_of(compiled), "xla cost_analysis"
      xla_flops[name] = row["flops"]
    else:
      ref = SAME_MATH.get(name, name)
      if ref in xla_flops:
        xla_flops[name] = xla_flops[ref]
      if name not in xla_flops:  # compile the xla form only for its count (no run)
        try:
          c2, _ = build(ref, "xla", length, args)
          xla_flops[name] = flops_of(c2)
          del c2
        except Exception:  # noqa: BLE001
          xla_flops[name] = None
      row["flops"] = xla_flops[name]
      row["flops_method"] = "cost_analysis of the variant's xla step (loop bodies uncounted)"
      row["flops_loop_body_only"] = flops_of(compiled)
    free, needed = ba.available_bytes(), ba.needed_bytes(compiled)
    row["needed_gib"] = round(needed / ba.GIB, 2)
    if (free is not None and needed > args.max_mem_frac * free) or \
        needed > args.max_mem_gib * ba.GIB:
      row["note"] = (f"not timed for memory: needs {needed / ba.GIB:.1f} GiB "
                     f"(limit {args.max_mem_gib} GiB, {args.max_mem_frac} of free)")
    else:
      first = once_ms(compiled, real)  # warm-up
      row["warmup_ms"] = round(first, 1)
      if first > args.max_run_s * 1e3:
        row["note"] = f"one run {first / 1e3:.0f} s > {args.max_run_s} s: not timed"
      else:
        built[key] = (compiled, real)
    info[key] = row
    print(f"[L={length}] built {key}: flops={row.get('flops')} mem={row.get('temp_mib')} MiB "
          f"{row.get('note', '')}{row.get('error', '')}", flush=True)
  order = list(built)
  times = {k: [] for k in order}
  ratios = {k: [] for k in order}
  base_key = "standard/xla"
  loads = []
  for r in range(args.rounds):
    loads.append(os.getloadavg()[0])
    this = {}
    for key in (order if r % 2 == 0 else order[::-1]):
      this[key] = once_ms(*built[key])
      times[key].append(this[key])
    if base_key in this:
      for key in order:
        ratios[key].append(this[key] / this[base_key])
    print(f"[L={length}] round {r}: " + ", ".join(f"{k} {v:.0f}" for k, v in this.items()),
          flush=True)
  base_flops = info.get(base_key, {}).get("flops")
  for key, row in info.items():
    if times.get(key):
      row["ms"] = round(statistics.median(times[key]), 2)
      row["times_ms"] = [round(t, 2) for t in times[key]]
    if ratios.get(key):
      row["time_ratio"] = round(statistics.median(ratios[key]), 3)
      row["round_ratios"] = [round(x, 3) for x in ratios[key]]
    if row.get("flops") and base_flops:
      row["flops_ratio"] = round(row["flops"] / base_flops, 3)
      if "time_ratio" in row:
        row["time_per_flop"] = round(row["time_ratio"] / row["flops_ratio"], 3)
    row["loadavg_rounds"] = [round(x, 2) for x in loads]
    rows.append(row)
  save()
  del built


def render(doc: dict) -> str:
  lines = []
  meta = doc.get("meta", {})
  lines.append(f"{meta.get('date', '')}, {meta.get('cpu_model', '')}, {meta.get('cpu_count')} "
               f"cores; load average at start {meta.get('loadavg_start')}, end "
               f"{meta.get('loadavg_end')}; command: `{meta.get('command', '')}`\n")
  for length in sorted({r["L"] for r in doc["rows"]}):
    sec = [r for r in doc["rows"] if r["L"] == length]
    base = next((r for r in sec if r["case"] == "standard/xla"), {})
    lines.append(f"**L = {length}, {sec[0]['mode']}** (d = {sec[0]['d_model']}, "
                 f"{sec[0]['heads']} heads, batch {sec[0]['batch']}, causal, {sec[0]['dtype']}; "
                 f"standard {base.get('ms', '-')} ms; load during rounds "
                 f"{sec[0].get('loadavg_rounds')})\n")
    lines.append("| case | GFLOP | FLOPs vs standard | ms (median) | time vs standard | "
                 "time per FLOP vs standard | temp MiB |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in sec:
      g = f"{r['flops'] / 1e9:.1f}" if r.get("flops") else "-"
      star = "" if r.get("impl") == "xla" else "¹"
      cells = [r["case"], g + star, f"{r['flops_ratio']:.2f}x" if "flops_ratio" in r else "-",
               f"{r['ms']:.0f}" if "ms" in r else (r.get("note") or r.get("error", "-")),
               f"{r['time_ratio']:.2f}x" if "time_ratio" in r else "-",
               f"**{r['time_per_flop']:.2f}**" if "time_per_flop" in r else "-",
               f"{r.get('temp_mib', '-')}"]
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
  lines.append("¹ chunked: XLA counts a loop body once; FLOPs are the same variant's `xla` step "
               "(useful work; the checkpointed backward recomputes tiles on top).\n")
  return "\n".join(lines)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out")
  p.add_argument("--render", metavar="JSON")
  p.add_argument("--append", action="store_true", help="keep the rows already in --out")
  p.add_argument("--lengths", default="1024")
  p.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated variant/impl")
  p.add_argument("--mode", choices=("fwd", "fwdbwd"), default="fwdbwd")
  p.add_argument("--d-model", type=int, default=256)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--max-run-s", type=float, default=60.0)
  p.add_argument("--max-mem-frac", type=float, default=0.3)
  p.add_argument("--max-mem-gib", type=float, default=6.0)
  args = p.parse_args(argv)
  if not args.render and not args.out:
    p.error("--out is required")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.render:
    with open(args.render) as f:
      print(render(json.load(f)))
    return 0
  cases = [tuple(c.split("/")) for c in args.cases.split(",") if c]
  if ("standard", "xla") not in cases:
    cases.insert(0, ("standard", "xla"))
  for name, _ in cases:
    if name not in attention.REGISTRY:
      raise SystemExit(f"unknown variant {name!r}")
  doc = {"meta": dict(ba.environment(), command=" ".join(["python"] + sys.argv),
                      settings={k: v for k, v in vars(args).items() if k != "render"}),
         "rows": []}
  if args.append and os.path.exists(args.out):
    with open(args.out) as f:
      old = json.load(f)
    doc["rows"] = old["rows"]
    doc["meta"]["earlier_runs"] = old["meta"].pop("earlier_runs", []) + [old["meta"]]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

  def save():
    doc["meta"]["loadavg_end"] = list(os.getloadavg())
    with open(args.out + ".tmp", "w") as f:
      json.dump(doc, f, indent=1)
    os.replace(args.out + ".tmp", args.out)

  for length in [int(v) for v in args.lengths.split(",") if v]:
    run_length(length, cases, args, doc["rows"], save)
  print(render(doc))
  return 0


if __name__ == "__main__":
  sys.exit(main())
