"""Attention benchmarks: time and compiled temporary memory against sequence length.

Two sections (models/attention/README.md §6.4 and §8):

* ``kernels``: the pure standard-math kernels on q, k, v ``[B, L, H, dh]``:
  ``attnlab.xla`` / ``attnlab.chunked`` (``attnlab.models.attention.dot_product_attention``),
  ``jax.xla`` (``jax.nn.dot_product_attention(implementation="xla")``, the plain-JAX
  reference) and, on GPU, ``jax.cudnn``, ``attnlab.cudnn`` and the Pallas flash kernel
  ``pallas.mha`` (if it imports).
* ``layers``: every registered variant on every implementation its ``Options.supported_impls``
  lists (cuDNN only on GPU), as an NNX layer ``y = layer(x)`` with x ``[B, L, d_model]``.

For each case, length and mode (``fwd``: forward; ``fwdbwd``: gradient of ``sum(out)`` w.r.t.
q, k, v, or w.r.t. the layer's parameters and x) it records the compiled
``memory_analysis().temp_size_in_bytes`` (exact, load-independent; compiling needs no memory
for the arrays) and, up to ``--time-max-length``, the median wall time of ``--repeats`` runs
after ``--warmup`` runs, each ended by ``block_until_ready``. A case whose single run takes
longer than ``--max-run-s`` is timed once, and its later rows (forward+backward at that length,
longer lengths) are not timed.

Results go to a JSON file, rewritten after every row (a killed run keeps what it measured);
``--render FILE`` prints its markdown tables.

Examples::

  python experiments/benchmarks/bench_attention.py --device cpu --section kernels \\
      --out experiments/benchmarks/results/attention_kernels_cpu.json
  python experiments/benchmarks/bench_attention.py --device gpu \\
      --out /tmp/gpu/attention_gpu.json
  python experiments/benchmarks/bench_attention.py --render \\
      experiments/benchmarks/results/attention_kernels_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models import attention

MIB = 2.0 ** 20
GIB = 2.0 ** 30

# Per-device defaults; every field can be overridden by a flag of the same name.
DEFAULTS = {
    "cpu": dict(dtype="float32", batch=1, heads=4, head_dim=64,
                lengths="512,1024,2048,4096,8192,16384", time_max_length=4096,
                layer_lengths="512,1024,2048,4096,8192,16384", layer_time_max_length=2048,
                d_model=256, layer_heads=8, causal="both", layer_causal="causal",
                repeats=3, warmup=1, max_run_s=20.0),
    "gpu": dict(dtype="bfloat16", batch=1, heads=16, head_dim=64,
                lengths="1024,2048,4096,8192,16384,32768", time_max_length=32768,
                layer_lengths="1024,4096,16384", layer_time_max_length=16384,
                d_model=1024, layer_heads=16, causal="both", layer_causal="causal",
                repeats=10, warmup=2, max_run_s=2.0),
}

FIRST_VARIANTS = ("standard", "memory_efficient")


# ----------------------------------------------------------------------------------------------
# Environment.
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
  """``lscpu``'s model name (or ``platform.processor()`` where lscpu is missing)."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
      if line.lower().startswith("model name"):
        return line.split(":", 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return platform.processor() or "unknown"


def environment() -> dict:
  """Device, versions, date and load: the facts a timing table needs beside it."""
  dev = jax.devices()[0]
  return {
      "backend": jax.default_backend(),
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
      "python": platform.python_version(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "loadavg_start": list(os.getloadavg()),
  }


# ----------------------------------------------------------------------------------------------
# Measuring one compiled function.
# ----------------------------------------------------------------------------------------------


def compile_fn(fn: Callable, args) -> jax.stages.Compiled:
  """``jax.jit(fn)`` lowered and compiled for ``args`` (arrays or ShapeDtypeStructs)."""
  return jax.jit(fn).lower(*args).compile()


def temp_bytes(compiled) -> int | None:
  """Compiled temporary memory in bytes (None where the backend does not report it)."""
  analysis = compiled.memory_analysis()
  return None if analysis is None else int(analysis.temp_size_in_bytes)


def available_bytes() -> int | None:
  """Memory a run may still use: the device's free memory, else the host's ``MemAvailable``."""
  stats = jax.devices()[0].memory_stats()
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def needed_bytes(compiled) -> int:
  """Temporaries plus arguments and outputs of one run of ``compiled``."""
  a = compiled.memory_analysis()
  if a is None:
    return 0
  return int(a.temp_size_in_bytes + a.argument_size_in_bytes + a.output_size_in_bytes)


def time_compiled(compiled, args, *, repeats: int, warmup: int, max_run_s: float) -> dict:
  """Wall times in ms of ``compiled(*args)`` (each run ends in ``block_until_ready``).

  The first warm-up run is timed too: if it exceeds ``max_run_s`` it is the only sample and
  ``slow`` is set (the caller then stops timing that case at longer lengths).
  """
  def once():
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return (time.perf_counter() - t0) * 1e3

  first = once()
  if first > max_run_s * 1e3:
    return {"ms": first, "times_ms": [first], "slow": True}
  for _ in range(max(warmup - 1, 0)):
    once()
  times = [once() for _ in range(repeats)]
  return {"ms": statistics.median(times), "times_ms": times, "slow": False}


def short_error(e: BaseException) -> str:
  text = f"{type(e).__name__}: {e}".splitlines()[0]
  return text[:300]


# ----------------------------------------------------------------------------------------------
# Cases.
# ----------------------------------------------------------------------------------------------


def kernel_cases(device: str) -> dict[str, Callable]:
  """Name -> ``fn(q, k, v, causal)`` for the pure kernels of this device."""
  dpa = attention.dot_product_attention
  cases = {
      "attnlab.xla": lambda q, k, v, c: dpa(q, k, v, causal=c, impl="xla"),
      "attnlab.chunked": lambda q, k, v, c: dpa(q, k, v, causal=c, impl="chunked"),
  }
  if device == "gpu":
    cases["jax.cudnn"] = lambda q, k, v, c: jax.nn.dot_product_attention(
        q, k, v, is_causal=c, implementation="cudnn")
  cases["jax.xla"] = lambda q, k, v, c: jax.nn.dot_product_attention(
      q, k, v, is_causal=c, implementation="xla")
  if device == "gpu":  # less important ones last (the suite has a deadline)
    try:
      from jax.experimental.pallas.ops.gpu import attention as pallas_attention

      def pallas_mha(q, k, v, c):
        return pallas_attention.mha(q, k, v, None, sm_scale=1.0 / math.sqrt(q.shape[-1]),
                                    causal=c)
      cases["pallas.mha"] = pallas_mha
    except Exception as e:  # noqa: BLE001  (optional reference only)
      print(f"pallas.mha unavailable: {short_error(e)}", file=sys.stderr)
    cases["attnlab.cudnn"] = lambda q, k, v, c: dpa(q, k, v, causal=c, impl="cudnn")
  return cases


def kernel_fns(fn: Callable, causal: bool) -> dict[str, Callable]:
  """Forward and forward+backward (grad of sum(out) w.r.t. q, k, v) of a kernel."""
  def fwd(q, k, v):
    return fn(q, k, v, causal)

  def fwdbwd(q, k, v):
    loss = lambda q, k, v: jnp.sum(fn(q, k, v, causal).astype(jnp.float32))
    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  return {"fwd": fwd, "fwdbwd": fwdbwd}


def layer_cases(device: str, dtype: str, variants: list[str] | None) -> list[tuple[str, str]]:
  """(variant, impl) pairs: every registered variant and each impl it supports.

  ``standard`` and ``memory_efficient`` come first. cuDNN is skipped off GPU and for float32.
  """
  names = variants or sorted(attention.REGISTRY)
  names = ([n for n in FIRST_VARIANTS if n in names]
           + [n for n in names if n not in FIRST_VARIANTS])
  cases = []
  for name in names:
    for impl in attention.REGISTRY[name].Options.supported_impls:
      if impl == "cudnn" and (device != "gpu" or dtype == "float32"):
        continue
      cases.append((name, impl))
  return cases


def layer_fns(name: str, impl: str, *, d_model: int, heads: int, causal: bool, dtype: str):
  """Forward and forward+backward of one variant as pure functions of (params, rest, x)."""
  layer = attention.make(name, d_model=d_model, num_heads=heads, causal=causal,
                         rngs=nnx.Rngs(0), impl=impl, dtype=dtype)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def apply(p, r, x):
    return nnx.merge(graphdef, p, r)(x)

  def fwd(p, r, x):
    return apply(p, r, x)

  def fwdbwd(p, r, x):
    loss = lambda p, x: jnp.sum(apply(p, r, x).astype(jnp.float32))
    return jax.grad(loss, argnums=(0, 1))(p, x)

  return {"fwd": fwd, "fwdbwd": fwdbwd}, params, rest


# ----------------------------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------------------------


class Recorder:
  """Holds the result document and rewrites ``path`` after every row."""

  def __init__(self, path: str, meta: dict, append: bool = False):
    self.path, self.doc = path, {"meta": meta, "rows": []}
    if append and os.path.exists(path):
      with open(path) as f:
        old = json.load(f)
      self.doc["rows"] = old["rows"]
      self.doc["meta"]["earlier_runs"] = (old["meta"].pop("earlier_runs", [])
                                          + [old["meta"]])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def add(self, row: dict) -> None:
    self.doc["rows"].append(row)
    self.flush()
    mem = row.get("temp_mib")
    ms = row.get("ms")
    print(f"{row['section']:7s} {row['case']:34s} L={row['L']:<6d} causal={row['causal']!s:5s} "
          f"{row['mode']:6s} mem={'-' if mem is None else f'{mem:.1f}'} MiB "
          f"time={'-' if ms is None else f'{ms:.2f}'} ms"
          + (f"  [{row['error']}]" if row.get("error") else ""), flush=True)

  def flush(self) -> None:
    self.doc["meta"]["loadavg_end"] = list(os.getloadavg())
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(self.doc, f, indent=1)
    os.replace(tmp, self.path)


def measure(rec: Recorder, base: dict, fn: Callable, make_args: Callable, *, time_it: bool,
            args: argparse.Namespace) -> bool:
  """Compile ``fn``, record its memory and (if ``time_it``) its time. True if it was slow."""
  row = dict(base)
  t0 = time.perf_counter()
  try:
    real = make_args()
    compiled = compile_fn(fn, real)
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    tb = temp_bytes(compiled)
    row["temp_bytes"] = tb
    row["temp_mib"] = None if tb is None else round(tb / MIB, 3)
  except Exception as e:  # noqa: BLE001  (recorded, the sweep goes on)
    row["error"] = "compile: " + short_error(e)
    rec.add(row)
    return False
  slow = False
  free, needed = available_bytes(), needed_bytes(compiled)
  if time_it and free is not None and needed > args.max_mem_frac * free:
    # On CPU an allocation past the RAM kills the whole process (no exception to record).
    time_it = False
    row["note"] = (f"not timed for memory: needs {needed / GIB:.1f} GiB, "
                   f"{free / GIB:.1f} GiB free")
  if time_it:
    try:
      timing = time_compiled(compiled, real, repeats=args.repeats, warmup=args.warmup,
                             max_run_s=args.max_run_s)
      row.update(ms=round(timing["ms"], 4), times_ms=[round(t, 4) for t in timing["times_ms"]])
      slow = timing["slow"]
      if slow:
        row["note"] = f"one run > {args.max_run_s} s: single sample, later rows untimed"
    except Exception as e:  # noqa: BLE001  (e.g. out of memory at run time)
      row["error"] = "run: " + short_error(e)
  del compiled
  rec.add(row)
  return slow


def past_deadline(args) -> bool:
  return args.deadline_s > 0 and time.perf_counter() - args.t_start > args.deadline_s


def run_kernels(rec: Recorder, args) -> None:
  dtype = jnp.dtype(args.dtype)
  cases = kernel_cases(args.device)
  if args.kernels:
    cases = {k: v for k, v in cases.items() if k in args.kernels}
  for name, fn in cases.items():
    for causal in args.causal_list:
      slow = False
      for length in args.length_list:
        shape = (args.batch, length, args.heads, args.head_dim)

        def make_args(shape=shape):
          keys = jax.random.split(jax.random.key(length), 3)
          return tuple(jax.random.normal(kk, shape, dtype) for kk in keys)

        for mode, f in kernel_fns(fn, causal).items():
          base = dict(section="kernels", case=name, impl=name.split(".")[-1], L=length,
                      causal=causal, mode=mode, shape=list(shape), dtype=args.dtype)
          if past_deadline(args):
            rec.add(dict(base, error="skipped: deadline"))
            continue
          time_it = length <= args.time_max_length and not slow
          slow |= measure(rec, base, f, make_args, time_it=time_it, args=args)


def run_layers(rec: Recorder, args) -> None:
  for name, impl in layer_cases(args.device, args.dtype, args.variants):
    for causal in args.layer_causal_list:
      slow = False
      for length in args.layer_length_list:
        try:
          fns, params, rest = layer_fns(name, impl, d_model=args.d_model,
                                        heads=args.layer_heads, causal=causal,
                                        dtype=args.dtype)
        except Exception as e:  # noqa: BLE001
          rec.add(dict(section="layers", case=f"{name}/{impl}", variant=name, impl=impl,
                       L=length, causal=causal, mode="fwd", error="build: " + short_error(e)))
          continue
        shape = (args.batch, length, args.d_model)

        def make_args(shape=shape, params=params, rest=rest):
          x = jax.random.normal(jax.random.key(length), shape, jnp.float32)
          return params, rest, x

        for mode, f in fns.items():
          base = dict(section="layers", case=f"{name}/{impl}", variant=name, impl=impl,
                      L=length, causal=causal, mode=mode, shape=list(shape), dtype=args.dtype,
                      d_model=args.d_model, heads=args.layer_heads)
          if past_deadline(args):
            rec.add(dict(base, error="skipped: deadline"))
            continue
          time_it = length <= args.layer_time_max_length and not slow
          slow |= measure(rec, base, f, make_args, time_it=time_it, args=args)


# ----------------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------------


def _fmt(value, digits=1):
  if value is None:
    return "-"
  if value >= 100:
    return f"{value:.0f}"
  return f"{value:.{digits}f}"


def render(doc: dict) -> str:
  """Markdown tables: per section, rows (case, causal), columns L; cells ``fwd / fwdbwd``."""
  rows = doc["rows"]
  lines = []
  for section in ("kernels", "layers"):
    sec = [r for r in rows if r["section"] == section]
    if not sec:
      continue
    # An appended run (--append) re-measures rows: the latest row of each cell counts.
    sec = list({(r["case"], r["causal"], r["L"], r["mode"]): r for r in sec}.values())
    lengths = sorted({r["L"] for r in sec})
    keys = list(dict.fromkeys((r["case"], r["causal"]) for r in sec))
    for metric, title, digits in (("temp_mib", "temporary memory, MiB", 1),
                                  ("ms", "time, ms (median)", 2)):
      lines.append(f"**{section}: {title}, forward / forward+backward**\n")
      lines.append("| case | causal | " + " | ".join(f"L={n}" for n in lengths) + " |")
      lines.append("|---|---|" + "---|" * len(lengths))
      for case, causal in keys:
        cells = []
        for n in lengths:
          got = {r["mode"]: r for r in sec
                 if r["case"] == case and r["causal"] == causal and r["L"] == n}
          vals = [got.get(m, {}).get(metric) for m in ("fwd", "fwdbwd")]
          if all(v is None for v in vals):
            errs = [got.get(m, {}).get("error") for m in ("fwd", "fwdbwd")]
            cells.append("error" if any(e and not e.startswith("skipped") for e in errs)
                         else "-")
          else:
            cells.append(" / ".join(_fmt(v, digits) for v in vals))
        lines.append(f"| {case} | {'yes' if causal else 'no'} | " + " | ".join(cells) + " |")
      lines.append("")
    lines.append(ratio_lines(sec))
    errors = {}
    for r in sec:
      if r.get("error") and not r["error"].startswith("skipped"):
        errors.setdefault((r["case"], r["error"]), []).append(
            f"{r['L']}{'' if r['mode'] == 'fwd' else '+bwd'}")
    for (case, err), where in errors.items():
      lines.append(f"- error {case} at L={','.join(dict.fromkeys(where))}: {err}")
    notes = {}
    for r in sec:
      if r.get("note"):
        kind = r["note"].split(":")[0]  # the reason without the numbers
        notes.setdefault((r["case"], kind), []).append(
            f"{r['L']}{'' if r['mode'] == 'fwd' else '+bwd'}")
    for (case, kind), where in notes.items():
      lines.append(f"- {case} at L={','.join(where)}: {kind}")
    skipped = sum(1 for r in sec if str(r.get("error", "")).startswith("skipped"))
    if skipped:
      lines.append(f"- {skipped} rows skipped at the deadline")
    lines.append("")
  return "\n".join(lines)


def ratio_lines(sec: list[dict]) -> str:
  """Memory ratios of the XLA reference over the O(L) path at each length (fwd / fwdbwd)."""
  pairs = [("attnlab.xla", "attnlab.chunked"), ("jax.xla", "attnlab.chunked"),
           ("standard/xla", "memory_efficient/chunked")]
  out = []
  for ref, new in pairs:
    for causal in (False, True):
      cells = []
      for n in sorted({r["L"] for r in sec}):
        vals = []
        for mode in ("fwd", "fwdbwd"):
          a = [r.get("temp_bytes") for r in sec if r["case"] == ref and r["L"] == n
               and r["causal"] == causal and r["mode"] == mode]
          b = [r.get("temp_bytes") for r in sec if r["case"] == new and r["L"] == n
               and r["causal"] == causal and r["mode"] == mode]
          vals.append(a[0] / b[0] if a and b and a[0] and b[0] else None)
        if any(v is not None for v in vals):
          cells.append(f"L={n}: " + " / ".join(_fmt(v) + "x" if v else "-" for v in vals))
      if cells:
        out.append(f"- memory {ref} / {new}{' (causal)' if causal else ''}: "
                   + "; ".join(cells))
  return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                 help="picks the defaults below (and enables cuDNN/Pallas cases on gpu)")
  p.add_argument("--section", choices=("kernels", "layers", "all"), default="all")
  p.add_argument("--out", help="result JSON (rewritten after every row)")
  p.add_argument("--render", metavar="JSON", help="print the markdown tables of a result file")
  for field, default in DEFAULTS["cpu"].items():
    kind = type(default)
    p.add_argument("--" + field.replace("_", "-"), type=kind, default=None,
                   help=f"default: cpu {default!r}, gpu {DEFAULTS['gpu'][field]!r}")
  p.add_argument("--variants", help="comma-separated layer variants (default: the registry)")
  p.add_argument("--kernels", help="comma-separated kernel cases (default: all of the device)")
  p.add_argument("--append", action="store_true",
                 help="keep the rows already in --out and add this run's (meta of earlier "
                 "runs kept under meta.earlier_runs)")
  p.add_argument("--deadline-s", type=float, default=0.0,
                 help="after this many seconds, remaining rows are recorded as skipped")
  p.add_argument("--max-mem-frac", type=float, default=0.85,
                 help="time a case only if its run needs at most this fraction of the free "
                 "memory (the rest keep their compiled memory, marked not timed)")
  p.add_argument("--force", action="store_true",
                 help="run --device gpu settings on a non-GPU backend (smoke test only)")
  args = p.parse_args(argv)
  if args.render:
    return args
  if not args.out:
    p.error("--out is required")
  for field, default in DEFAULTS[args.device].items():
    if getattr(args, field) is None:
      setattr(args, field, default)
  ints = lambda s: [int(v) for v in str(s).split(",") if v]
  causal = {"both": [False, True], "causal": [True], "noncausal": [False]}
  args.length_list = ints(args.lengths)
  args.layer_length_list = ints(args.layer_lengths)
  args.causal_list = causal[args.causal]
  args.layer_causal_list = causal[args.layer_causal]
  args.variants = args.variants.split(",") if args.variants else None
  args.kernels = args.kernels.split(",") if args.kernels else None
  return args


def render_or_refuse(args, render_fn) -> int | None:
  """What a benchmark's ``main`` does before measuring: with ``--render FILE`` print
  ``render_fn`` of that result file (0); with ``--device gpu`` on another backend and no
  ``--force``, refuse (2); otherwise None (go on)."""
  if args.render:
    with open(args.render) as f:
      print(render_fn(json.load(f)))
    return 0
  if args.device == "gpu" and jax.default_backend() != "gpu" and not args.force:
    print(f"--device gpu but the jax backend is {jax.default_backend()!r} (--force runs the "
          "GPU settings anyway: the smoke test)", file=sys.stderr)
    return 2
  return None


def main(argv=None) -> int:
  args = parse_args(argv)
  stop = render_or_refuse(args, render)
  if stop is not None:
    return stop
  args.t_start = time.perf_counter()
  settings = {k: v for k, v in vars(args).items()
              if k not in ("render", "t_start", "append", "force") and not k.endswith("_list")}
  rec = Recorder(args.out, dict(environment(), settings=settings,
                                command=" ".join([os.path.basename(sys.executable)]
                                                 + sys.argv)), append=args.append)
  if args.section in ("kernels", "all"):
    run_kernels(rec, args)
  if args.section in ("layers", "all"):
    run_layers(rec, args)
  rec.doc["meta"]["wall_s"] = round(time.perf_counter() - args.t_start, 1)
  rec.flush()
  print(render(rec.doc))
  return 0


if __name__ == "__main__":
  sys.exit(main())
