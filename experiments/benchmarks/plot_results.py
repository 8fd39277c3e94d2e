"""Plots of the benchmark results: time and memory against L, log axes, one line per case.

Reads a ``bench_attention.py`` result (``kernels`` and/or ``layers`` rows) or a
``bench_perflop.py`` result and writes one PNG per benchmark section::

  python experiments/benchmarks/plot_results.py \\
      experiments/benchmarks/results/attention_layers_cpu.json \\
      --out experiments/benchmarks/results/attention_layers_cpu.png
"""

from __future__ import annotations

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(rows, mode):
  """case label -> sorted [(L, ms, temp_mib)] for one mode (fwd / fwdbwd)."""
  out = {}
  for r in rows:
    if r.get("mode", "fwdbwd") != mode:
      continue
    label = r["case"]
    if "causal" in r and r.get("section") == "kernels":
      label += " (causal)" if r["causal"] else ""
    out.setdefault(label, []).append((r["L"], r.get("ms"), r.get("temp_mib")))
  return {k: sorted(v) for k, v in out.items()}


def plot(rows, title, path, mode="fwdbwd"):
  data = series(rows, mode)
  fig, axes = plt.subplots(1, 2, figsize=(13, 5))
  for label, pts in data.items():
    for ax, idx in ((axes[0], 1), (axes[1], 2)):
      xs = [p[0] for p in pts if p[idx]]
      ys = [p[idx] for p in pts if p[idx]]
      if xs:
        ax.plot(xs, ys, marker="o", label=label)
  for ax, what in ((axes[0], "time, ms (median)"), (axes[1], "compiled temporary memory, MiB")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel(what)
    ax.grid(True, which="both", alpha=0.3)
  axes[1].legend(fontsize=7, loc="upper left")
  fig.suptitle(f"{title} ({'forward+backward' if mode == 'fwdbwd' else 'forward'})")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  print(f"wrote {path}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("json")
  p.add_argument("--out", required=True, help="PNG path (a section suffix is added if the "
                 "file holds both kernels and layers)")
  p.add_argument("--mode", default="fwdbwd", choices=("fwd", "fwdbwd"))
  p.add_argument("--title", default=None)
  args = p.parse_args(argv)
  with open(args.json) as f:
    doc = json.load(f)
  rows = doc["rows"]
  sections = sorted({r.get("section", "layers") for r in rows})
  for sec in sections:
    sel = [r for r in rows if r.get("section", "layers") == sec]
    path = args.out if len(sections) == 1 else args.out.replace(".png", f"_{sec}.png")
    plot(sel, args.title or f"{sec}: {doc['meta'].get('cpu_model', '')}", path, args.mode)
  return 0


if __name__ == "__main__":
  sys.exit(main())
