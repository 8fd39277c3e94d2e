"""Plot L-P5: every row's paired difference to ``standard`` Uniform, Uniform and Hybrid side by
side (``lm_paired_differences.png``), so that which rows are decided can be read at a glance
instead of from the paired-difference table's eight columns.

Per row and layout: the seed-paired mean with its 95% t-interval (thick bar; an open marker
where one seed gives no interval) and the window-paired 95% interval (thin bar just below),
exactly the numbers of the report's paired-difference table (:func:`.paired.pair`). A dashed
line marks 0 (no difference); in the Hybrid panel a dotted line marks claim (iv)'s tolerance,
10% of `standard`'s mean (:data:`.claims.HYBRID_TOL`; drawn when every row shares one
reference).
"""

from __future__ import annotations

from typing import Sequence

from attnlab.train.report import claims, paired
from attnlab.train.report import plots as plotting

NAME = "lm_paired_differences.png"
LAYOUTS = (("uniform", "Uniform"), ("hybrid", "Hybrid"))


def paired_rows(rows: Sequence) -> list[tuple[str, dict[str, paired.Paired]]]:
  """``(label, {layout: Paired})`` for every non-reference row with a reference, in table order;
  layouts without runs are left out, rows without any pair too."""
  out = []
  for r in rows:
    if r.reference is None or r.is_reference:
      continue
    pairs = {}
    for key, _ in LAYOUTS:
      group = getattr(r, key)
      if group is not None:
        p = paired.pair(group.runs, r.reference.runs)
        if p.seed is not None:
          pairs[key] = p
    if pairs:
      out.append((r.label.replace("`", ""), pairs))
  return out


def seeds(pairs: dict[str, paired.Paired]) -> str:
  """The paired seed counts of a row's layouts, Uniform first: ``'3'``, ``'2 / 2'``."""
  return " / ".join(str(pairs[k].seed.n) for k, _ in LAYOUTS if k in pairs)


def paired_difference_plot(rows: Sequence, directory: str) -> str | None:
  """Draw plot L-P5 into ``directory``; returns its file name (None when no row has a pair)."""
  data = paired_rows(rows)
  if not data:
    return None
  references = {id(r.reference): r.reference for r in rows if r.reference is not None}
  # claim (iv)'s line only where every row has the same reference (one setting)
  ref_bpb = next(iter(references.values())).mean("bpb") if len(references) == 1 else None
  tolerance = claims.HYBRID_TOL - 1.0
  plt = plotting.pyplot()
  height = 1.2 + 0.32 * len(data)
  fig, axes = plt.subplots(1, 2, figsize=(11, height), sharey=True)
  ys = list(range(len(data)))[::-1]  # first table row on top
  for ax, (key, title) in zip(axes, LAYOUTS):
    for y, (_, pairs) in zip(ys, data):
      p = pairs.get(key)
      if p is None:
        continue
      seed = p.seed
      if seed.decided:
        ax.plot([seed.lo, seed.hi], [y, y], color="C0", linewidth=3, solid_capstyle="butt")
        ax.plot(seed.mean, y, "o", color="C0")
      else:
        ax.plot(seed.mean, y, "o", markerfacecolor="white", color="C0")
      if p.windows is not None:
        ax.plot([p.windows.lo, p.windows.hi], [y - 0.22, y - 0.22], color="C1", linewidth=1.2)
    ax.axvline(0.0, color="0.3", linestyle="--", linewidth=1)
    if key == "hybrid" and ref_bpb is not None:
      ax.axvline(tolerance * ref_bpb, color="0.3", linestyle=":", linewidth=1,
                 label=f"claim (iv): {tolerance:.0%} of standard")
      ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{title}: row − standard Uniform (bpb)", fontsize=10)
    ax.set_xlabel("Δ val bpb (left: better than standard)")
    ax.grid(axis="x", alpha=0.3)
  axes[0].set_yticks(ys)
  axes[0].set_yticklabels([f"{label} (n = {seeds(pairs)})" for label, pairs in data], fontsize=8)
  axes[0].set_ylim(-0.8, len(data) - 0.4)
  fig.suptitle("Paired differences to standard: thick = seed-paired 95% t-interval "
               "(open dot: one seed), thin = window-paired 95% interval; n = paired seeds "
               "(Uniform / Hybrid)", fontsize=9)
  fig.tight_layout()
  return plotting.save(fig, directory, NAME)
