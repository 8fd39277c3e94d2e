"""Attention diagnostics of LM runs (plots L-P3 / L-P4): the table and plots of the runs that have
a ``diagnostics.json`` (written by ``attnlab diagnose``, :mod:`attnlab.train.diagnostics`)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from attnlab.train.report import plots as plotting
from attnlab.train.report.tables import Group, markdown_table

METRICS = ("entropy", "sink", "local")


def _read(group: Group) -> list[dict]:
  from attnlab.train import diagnostics
  return [d for d in (diagnostics.read(r.path) for r in group.runs) if d]


def _layer_rows(diags: Sequence[dict]) -> dict[int, list[dict]]:
  out: dict[int, list[dict]] = {}
  for d in diags:
    for layer in d.get("layers", []):
      out.setdefault(int(layer["layer"]), []).append(layer)
  return dict(sorted(out.items()))


def diagnostics_section(groups: Sequence[Group], directory: str) -> tuple[list[str], list[str]]:
  """Markdown lines and PNG names for the groups with diagnostics (nothing when none has)."""
  found = [(g, _read(g)) for g in groups]
  found = [(g, d) for g, d in found if d]
  if not found:
    return [], []
  rows = []
  for g, diags in found:
    for j, layers in _layer_rows(diags).items():
      ok = [l for l in layers if l.get("applicable")]
      head = [g.label, str(j), layers[0].get("variant", "?")]
      if not ok:
        rows.append(head + [f"not applicable: {layers[0].get('reason', '?')}"]
                    + ["—"] * 4 + [str(len(layers))])
        continue
      mean = {m: float(np.mean([l["mean"][m] for l in ok])) for m in METRICS}
      spread = {m: float(np.mean([l["std_over_heads"][m] for l in ok])) for m in METRICS}
      rows.append(head + [f"{mean[m]:.3f}" for m in METRICS]
                  + [" / ".join(f"{spread[m]:.3f}" for m in METRICS),
                     f"{max(l['logits']['abs_max'] for l in ok):.2f}", str(len(ok))])
  refs = {(d["seq_len"], tuple(sorted(d["uniform_reference"].items())))
          for _, ds in found for d in ds}
  ref_text = "; ".join(f"context {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in r)
                       for s, r in sorted(refs))
  windows = sorted({d["windows"] for _, ds in found for d in ds})
  text = ["", "### Attention diagnostics (plots L-P3, L-P4)", "",
          markdown_table(["variant", "layer", "layer's attention", "entropy / log t",
                          "sink (first token)", "local (distance 0-3)",
                          "std over heads (entropy / sink / local)", "max abs logit", "runs"],
                         rows), "",
          "Per layer of the runs with `diagnostics.json` (`attnlab diagnose RUN`, on "
          f"{' / '.join(map(str, windows))} validation windows): for softmax layers, per head "
          "and averaged over causal queries that see t ≥ 2 keys, the attention entropy "
          "divided by log t, the mass on the window's first token and the mass on distances "
          "0-3; the head mean, then the mean over runs (seeds); the std over heads (mean over "
          "runs); the largest absolute pre-softmax logit over runs. Uniform attention gives "
          f"{ref_text}. Other layers: not applicable."]
  plots = [p for p in (_metric_plot(found, directory), _logit_plot(found, directory)) if p]
  return text, plots


def _metric_plot(found, directory: str) -> str | None:
  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, len(METRICS) + 1, figsize=(4.5 * len(METRICS) + 3.5, 3.8),
                           gridspec_kw={"width_ratios": [1] * len(METRICS) + [0.75]})
  legend_ax, axes = axes[-1], axes[:-1]
  labels = plotting.legend_labels([g for g, _ in found])
  drawn = False
  for (g, diags), text, style in zip(found, labels, plotting.styles(len(found))):
    per_layer = {j: [l for l in ls if l.get("applicable")] for j, ls in _layer_rows(diags).items()}
    xs = [j for j, ls in per_layer.items() if ls]
    if not xs:
      continue
    drawn = True
    for ax, m in zip(axes, METRICS):
      ax.plot(xs, [np.mean([l["mean"][m] for l in per_layer[j]]) for j in xs], marker="o",
              label=text, **style)
  if not drawn:
    plt.close(fig)
    return None
  ref = found[0][1][0]["uniform_reference"]
  titles = {"entropy": "entropy / log t", "sink": "mass on first token",
            "local": "mass at distance 0-3"}
  for ax, m in zip(axes, METRICS):
    ax.axhline(ref[m], color="0.75", linewidth=4, alpha=0.6, zorder=0, label="uniform attention")
    ax.set_title(titles[m])
    ax.set_xlabel("layer (0-indexed)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
  legend_ax.axis("off")
  legend_ax.legend(*axes[0].get_legend_handles_labels(), loc="center left", fontsize=7,
                   frameon=False)
  fig.suptitle("Attention per layer (softmax layers; mean over seeds)")
  return plotting.save(fig, directory, "lm_attention_diagnostics.png")


def _logit_plot(found, directory: str) -> str | None:
  from attnlab.train import diagnostics
  panels = [(g, d[0]) for g, d in found if any(l.get("applicable") for l in d[0]["layers"])]
  if not panels:
    return None
  plt = plotting.pyplot()
  cols = min(4, len(panels))
  nrows = math.ceil(len(panels) / cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
  labels = plotting.legend_labels([g for g, _ in panels])
  for ax, (g, diag), text in zip(axes.ravel(), panels, labels):
    for layer in diag["layers"]:
      if layer.get("applicable") and "abs_counts" in layer.get("logits", {}):
        diagnostics.logit_histogram(ax, layer, f"layer {layer['layer']}")
    ax.set_title(f"{text} (seed {diag.get('seed')})", fontsize=8)
    ax.legend(fontsize=6)
  for ax in axes.ravel()[len(panels):]:
    ax.axis("off")
  fig.suptitle("Pre-softmax |logit| per layer (count of query-key pairs; first run of each row)")
  return plotting.save(fig, directory, "lm_logit_histograms.png")
