"""Table L1/L2 with 95% intervals, paired differences to ``standard`` and the verdicts on the
claims of *Deconstructing Attention* (arXiv 2510.11602; experiments/lm_ablation/README.md §3.2).

Statistics: :mod:`attnlab.train.report.paired`. Each table row belongs to a **family** of the
paper, looked up in :data:`FAMILIES` (variant name plus optional config conditions; first match
wins); a row whose variant is not listed (an alternative attention such as ``relational``, or a
new control not yet mapped) is reported with its intervals but enters no claim. To map a new
control, add one line to :data:`FAMILIES`.

Claims (:data:`CLAIMS`), each checked per comparison and then overall (supported when every
comparison is, contradicted when any is, otherwise not decided):

i. Standard ≤ Hybrid, for every control family: Hybrid − Standard ≥ 0.
ii. Hybrid (any control) < Uniform (sequence-independent): Uniform_SI − Hybrid ≥ 0.
iii. Uniform (sequence-independent) < Uniform (MLP): Uniform_MLP − Uniform_SI ≥ 0.
iv. Every Hybrid within 10% of Standard's loss in nats (bpb · ln 2; the ratio of nats equals
    the ratio of bpb): Hybrid − 1.10 · Standard ≤ 0.
v. Skip far worse than its Hybrid: Skip − Hybrid ≥ :data:`SKIP_FAR_BPB` bpb (same runs).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from attnlab.train.report import paired
from attnlab.train.report.tables import Group, markdown_table

FAMILIES: tuple[tuple[str, dict, str], ...] = (
    ("standard", {"model.cb_position": ("none", None)}, "standard"),
    ("memory_efficient", {"model.cb_position": ("none", None)}, "standard"),
    ("uniform_broadcast", {"attention.options.softmax_heads": (False,)}, "sequence_independent"),
    ("mlp_control", {}, "mlp"),
    ("taylor_softmax", {}, "approximate"),
    ("token_score_pool", {}, "non_approximate"),
    ("random_seq_qk", {}, "sequence_independent"),
    ("fixed_text_qk", {}, "sequence_independent"),
    ("static_embedding_qk", {}, "sequence_independent"),
)
"""``(variant, {config key: accepted values}, family)``; a missing key reads as None."""

FAMILY_TEXT = {"standard": "Standard", "mlp": "MLP", "approximate": "Approximate",
               "non_approximate": "Non-approximate",
               "sequence_independent": "sequence-independent"}
CONTROL_FAMILIES = ("mlp", "approximate", "non_approximate", "sequence_independent")
"""The paper's replacements of attention: the rows its claims are about."""

HYBRID_TOL = 1.10
"""Claim iv: Hybrid loss at most 1.10 × Standard's (nats; the same ratio in bpb)."""
SKIP_FAR_BPB = 0.5
"""Claim v: "far worse" = Skip at least 0.5 bpb above its own Hybrid (×1.41 per byte in
perplexity); the paper's Skip cells are > 500× Standard in word perplexity."""


def family(config: dict) -> str | None:
  """The paper family of a row's config (:data:`FAMILIES`), None when not mapped."""
  name = config.get("attention.name")
  for variant, conditions, fam in FAMILIES:
    if variant == name and all(config.get(k) in ok for k, ok in conditions.items()):
      return fam
  return None


@dataclasses.dataclass
class Row:
  """One row of table L1: its Uniform and Hybrid groups and the ``standard`` reference."""

  label: str
  config: dict
  uniform: Group | None
  hybrid: Group | None
  reference: Group | None

  @property
  def family(self) -> str | None:
    return family(self.config)

  @property
  def is_reference(self) -> bool:
    return self.reference is not None and any(self.reference is g
                                              for g in (self.uniform, self.hybrid))


@dataclasses.dataclass
class Comparison:
  """One line of the claims table."""

  claim: str
  text: str
  p: paired.Paired | None
  threshold: float
  claimed: str
  missing: str = ""

  @property
  def verdict(self) -> tuple[str, str]:
    if self.missing:
      return paired.UNDECIDED, self.missing
    return paired.verdict(self.p, self.threshold, self.claimed)


def _runs(g: Group | None) -> list:
  return g.runs if g is not None else []


def _controls(rows: Sequence[Row]) -> list[Row]:
  return [r for r in rows if r.family in CONTROL_FAMILIES]


def _claim_i(rows):
  for r in _controls(rows):
    if r.hybrid is None or r.reference is None:
      yield Comparison("i", f"{r.label}: Hybrid − Standard", None, 0.0, "above",
                       "Hybrid runs missing" if r.hybrid is None else "`standard` missing")
    else:
      yield Comparison("i", f"{r.label}: Hybrid − Standard",
                       paired.pair(r.hybrid.runs, r.reference.runs), 0.0, "above")


def _claim_ii(rows):
  si = [r for r in rows if r.family == "sequence_independent"]
  hybrids = [r for r in _controls(rows) if r.hybrid is not None]
  if not si or not hybrids:
    yield Comparison("ii", "Uniform (sequence-independent) − Hybrid", None, 0.0, "above",
                     "no sequence-independent row" if not si else "no Hybrid runs")
  for u in si:
    for h in (h for h in hybrids if h.reference is u.reference):  # same setting only
      text = f"{u.label} Uniform − {h.label} Hybrid"
      if u.uniform is None:
        yield Comparison("ii", text, None, 0.0, "above", "Uniform runs missing")
      else:
        yield Comparison("ii", text, paired.pair(u.uniform.runs, h.hybrid.runs), 0.0, "above")


def _claim_iii(rows):
  si = [r for r in rows if r.family == "sequence_independent" and r.uniform is not None]
  mlp = [r for r in rows if r.family == "mlp" and r.uniform is not None]
  if not si or not mlp:
    yield Comparison("iii", "Uniform (MLP) − Uniform (sequence-independent)", None, 0.0,
                     "above", "no Uniform run of the MLP family" if not mlp
                     else "no Uniform sequence-independent run")
  pairs = [(u, m) for u in si for m in mlp if m.reference is u.reference]
  if si and mlp and not pairs:
    yield Comparison("iii", "Uniform (MLP) − Uniform (sequence-independent)", None, 0.0,
                     "above", "no MLP and sequence-independent rows of the same setting")
  for u, m in pairs:
    yield Comparison("iii", f"{m.label} − {u.label} (Uniform)",
                     paired.pair(m.uniform.runs, u.uniform.runs), 0.0, "above")


def _claim_iv(rows):
  for r in _controls(rows):
    text = f"{r.label}: Hybrid − {HYBRID_TOL:.2f} × Standard"
    if r.hybrid is None or r.reference is None:
      yield Comparison("iv", text, None, 0.0, "below",
                       "Hybrid runs missing" if r.hybrid is None else "`standard` missing")
    else:
      ratio = r.hybrid.mean("bpb") / r.reference.mean("bpb")
      yield Comparison("iv", f"{text} (ratio of means {ratio:.3f})",
                       paired.pair(r.hybrid.runs, r.reference.runs, coef=HYBRID_TOL), 0.0,
                       "below")


def _claim_v(rows):
  for r in _controls(rows):
    text = f"{r.label}: Skip − Hybrid"
    if r.hybrid is None or not r.hybrid.values("skip_bpb"):
      yield Comparison("v", text, None, SKIP_FAR_BPB, "above",
                       "Hybrid runs missing" if r.hybrid is None else "no Skip evaluation")
    else:
      yield Comparison("v", text, paired.pair(r.hybrid.runs, r.hybrid.runs, "skip_bpb", "bpb"),
                       SKIP_FAR_BPB, "above")


CLAIMS: tuple[tuple[str, str, Callable], ...] = (
    ("i", "Standard ≤ Hybrid (every control)", _claim_i),
    ("ii", "Hybrid (any control) < Uniform (sequence-independent)", _claim_ii),
    ("iii", "Uniform (sequence-independent) < Uniform (MLP)", _claim_iii),
    ("iv", f"every Hybrid within {HYBRID_TOL - 1:.0%} of Standard's loss (nats)", _claim_iv),
    ("v", f"Skip far worse than its Hybrid (≥ {SKIP_FAR_BPB} bpb)", _claim_v),
)


def overall(comparisons: Sequence[Comparison]) -> str:
  """Supported when every comparison is, contradicted when any is, else not decided."""
  verdicts = [c.verdict[0] for c in comparisons]
  if verdicts and all(v == paired.SUPPORTED for v in verdicts):
    return paired.SUPPORTED
  if any(v == paired.CONTRADICTED for v in verdicts):
    return paired.CONTRADICTED
  return paired.UNDECIDED


def evaluate_claims(rows: Sequence[Row]) -> dict[str, list[Comparison]]:
  """``{claim id: comparisons}`` for :data:`CLAIMS`."""
  return {cid: list(fn(rows)) for cid, _, fn in CLAIMS}


def _family_text(r: Row) -> str:
  if r.is_reference:
    return "Standard (reference)"
  fam = r.family
  return FAMILY_TEXT.get(fam, "—") + (" (same math)" if fam == "standard" else "")


def _claimed_text(c: Comparison) -> str:
  return f"{'≥' if c.claimed == 'above' else '≤'} {c.threshold:g}"


def l1_statistics(rows: Sequence[Row]) -> list[str]:
  """Markdown: table L1 with 95% intervals, paired differences, the claims and their
  verdicts (lines to append to the LM section)."""
  table, deltas = [], []
  for r in rows:
    uni, hyb = r.uniform, r.hybrid
    cells = [paired.interval_cell(paired.t_interval(g.values(m)) if g else None)
             for g, m in ((uni, "bpb"), (hyb, "bpb"), (hyb, "skip_bpb"))]
    if r.is_reference:
      cells[2] = "—"
    table.append([r.label, _family_text(r)] + cells)
    pairs = []
    for g in (uni, hyb):
      if g is None or r.reference is None or r.is_reference:
        pairs.append(None)
      else:
        pairs.append(paired.pair(g.runs, r.reference.runs))
    pairs.append(None if hyb is None or r.is_reference or not hyb.values("skip_bpb")
                 else paired.pair(hyb.runs, hyb.runs, "skip_bpb", "bpb"))
    row = [r.label]
    for p in pairs:
      row += ([paired.interval_cell(p.seed, signed=True), paired.window_cell(p.windows)]
              if p is not None else ["—", "—"])
    if r.is_reference:
      row[1:3] = ["reference", "reference"]
    row.append(" / ".join(p.dominant if p is not None else "—" for p in pairs[:2]))
    notes = sorted({n for p in pairs if p is not None for n in p.notes})
    if notes:
      row[0] += f" ({'; '.join(notes)})"
    deltas.append(row)
  out = ["", "### Table L1 with 95% intervals", "",
         markdown_table(["variant", "family", "Uniform val bpb", "Hybrid val bpb",
                         "Skip val bpb"], table), "",
         "Mean and 95% Student-t interval over seeds, `mean [lo, hi] (n=seeds)`: "
         "mean ± t(0.975, n−1) · sd / √n (sd with ddof = 1; `[—]` for one seed). Family: "
         "the row's group in arXiv 2510.11602 (`attnlab.train.report.claims.FAMILIES`); `—`: not "
         "one of the paper's rows (reported only, in no claim).", "",
         "### Paired differences (bpb)", "",
         markdown_table(["variant", "Δ Uniform, seeds", "Δ Uniform, windows",
                         "Δ Hybrid, seeds", "Δ Hybrid, windows", "Skip − Hybrid, seeds",
                         "Skip − Hybrid, windows", "larger noise (Uniform / Hybrid)"], deltas),
         "",
         "Δ: the row minus `standard` Uniform on the same seeds (Skip: minus the same Hybrid "
         "run's bpb). *Seeds*: one difference per seed, mean [95% t-interval] (n=seeds): "
         "training noise, on the fixed evaluation windows. *Windows* (where both runs wrote "
         "`window_bpb.json` on the same windows): per seed the mean over windows of the "
         "per-window difference with its standard error sd/√N, seeds combined (mean of the "
         "means, se = √(Σ se²)/S), shown as mean ± se [95% interval]: evaluation noise, "
         "models fixed. Larger noise: the one with the larger standard error."]
  return out + claims_lines(rows)


def claims_lines(rows: Sequence[Row]) -> list[str]:
  """Markdown of the claims table and the verdict of each claim."""
  found = evaluate_claims(rows)
  table, summary = [], []
  for cid, title, _ in CLAIMS:
    comps = found[cid]
    for c in comps:
      v, why = c.verdict
      p = c.p
      table.append([f"({cid})", c.text,
                    paired.interval_cell(p.seed, signed=True) if p else "—",
                    paired.window_cell(p.windows) if p else "—", _claimed_text(c),
                    f"**{v}**" + (f" ({why})" if v == paired.UNDECIDED else "")])
    counts = {v: sum(c.verdict[0] == v for c in comps)
              for v in (paired.SUPPORTED, paired.CONTRADICTED, paired.UNDECIDED)}
    missing = sorted({c.missing for c in comps if c.missing}) or (
        [] if comps else ["no row of the paper's control families"])
    parts = [", ".join(f"{n} {v}" for v, n in counts.items() if n)]
    parts.append(f"missing: {'; '.join(missing)}" if missing else "")
    summary.append([f"({cid})", title, f"**{overall(comps)}**",
                    "; ".join(p for p in parts if p)])
  outside = [r.label for r in rows if r.family not in CONTROL_FAMILIES and not r.is_reference]
  return (["", "### Claims of arXiv 2510.11602, decided by the intervals", "",
           markdown_table(["claim", "comparison", "seed-paired Δ [95%] (n)",
                           "window-paired Δ ± se [95%]", "claimed", "verdict"], table), ""]
          + [markdown_table(["claim", "statement", "verdict", "comparisons"], summary)]
          + ["", f"A comparison is **supported** when its seed-paired 95% interval (and the "
             f"window-paired one, where the runs have `window_bpb.json`) lies entirely on the "
             f"claimed side of the threshold, **contradicted** when entirely on the other side, "
             f"otherwise **not decided** (one seed decides nothing). A claim is supported when "
             f"all its comparisons are, contradicted when any is. Intervals are per "
             f"comparison (no correction for multiplicity). Far worse (v): ≥ {SKIP_FAR_BPB} bpb "
             f"above the Hybrid. Within {HYBRID_TOL - 1:.0%} (iv): the ratio of losses in nats "
             f"(= ratio of bpb) ≤ {HYBRID_TOL:.2f}, tested as Hybrid − {HYBRID_TOL:.2f} × "
             f"Standard ≤ 0 per seed and window."]
          + (["", f"Rows in no claim (reported only): {', '.join(outside)}."]
             if outside else []))


def l2_statistics(groups: Sequence[Group], contexts: Sequence[int], keys: dict,
                  reference: Callable[[Group], Group | None]) -> list[str]:
  """Markdown: table L2 with 95% intervals and the seed-paired difference to ``standard``
  Uniform at each context (``reference(group)``; the window-paired one is table L1's)."""
  cells, deltas = [], []
  for g in groups:
    ref = reference(g)
    cells.append([g.label] + [paired.interval_cell(paired.t_interval(g.values(keys[c])))
                              for c in contexts])
    if ref is None or ref is g:
      continue
    row = [g.label]
    for c in contexts:
      p = paired.pair(g.runs, ref.runs, keys[c], keys[c], windows=False)
      row.append(paired.interval_cell(p.seed, signed=True))
    deltas.append(row)
  header = ["variant"] + [f"ctx={c}" for c in contexts]
  out = ["", "### Table L2 with 95% intervals", "", markdown_table(header, cells), "",
         "Mean [95% t-interval] (n=seeds) of validation bpb at each evaluation context."]
  if deltas:
    out += ["", markdown_table(header, deltas), "",
            "The row minus `standard` Uniform at the same context, seed-paired, mean [95% "
            "t-interval] (n=seeds)."]
  return out
