"""``attnlab report DIR``: tables and plots from the runs under a sweep directory.

Every directory under DIR holding a ``config.json`` is a run; its ``metrics.jsonl`` last
``"final": true`` row gives its numbers. Runs are grouped by their whole config except the seed
(and bookkeeping such as logging and checkpoint intervals); each table row is a group, each cell
``mean ± std (n=seeds)`` with ddof = 1 (``±—`` for a single seed). One section per study (the
``task`` of config.json):

* ``icl_regression`` (studies.md §1): test MSE at each prompt length L (table A1/A2), the
  closed-form predictors the runs carry as italic reference rows, the published trained rows,
  the §1.5 acceptance bands; plot MSE vs L.
* ``lm`` (§3.2): table L1, variants × {Uniform, Hybrid, Skip} validation bits/byte with the
  perplexity ratio to ``standard`` (2^Δbpb), parameters and train tokens/s; plot val bpb vs step.
* ``icl_garg`` (§2): normalised error at k ∈ {d/2, d−1, d, 2d} (table B1) with least squares,
  3-NN and averaging on the same prompts; plot normalised error vs k.

Acceptance bands are printed under their table, each ``ok`` or ``**FAIL**``. The Markdown goes
to stdout and ``DIR/report.md``; PNG plots (150 dpi) go to DIR.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from attnlab.train.metrics import read_jsonl

DPI = 150
IGNORED = ("seed", "log_every", "eval_every")
IGNORED_PREFIXES = ("checkpoint.", "mesh.")
VARIANT_KEYS = ("attention.name", "attention.impl", "attention.options")
ALIASES = {"model.num_heads": "H", "data.covariance": "covariance"}

# studies.md §1.5.
HE_REFERENCE_LABELS = {
    "multihead_estimator": "multi-head estimator (ω, μ) = (±0.13, ±3.45)",
    "single_head_optimum": "single-head optimum",
    "gd": "GD (η = 0.897)",
    "dgd": "debiased GD",
    "debiased_gd": "debiased GD",
    "ridge": "ridge λ = σ²d (Bayes)",
    "zero": "zero predictor",
}
HE_PUBLISHED_TRAINED = {
    1: {10: 0.847, 20: 0.574, 40: 0.406, 100: 0.281},
    2: {10: 0.579, 20: 0.366, 40: 0.241, 100: 0.168},
    4: {10: 0.573, 20: 0.364, 40: 0.245, 100: 0.170},
    8: {10: 0.584, 20: 0.374, 40: 0.236, 100: 0.168},
}
HE_BANDS = {"multi": (0.23, 0.26), "single": (0.38, 0.45), "dgd_tol": 0.03,
            "smoke_steps": 2000, "smoke": {1: 0.45, 2: 0.30}}
GARG_LABELS = {"least_squares": "least squares", "3nn": "3-nearest neighbours",
               "averaging": "averaging"}
LM_UNIGRAM_BPB, LM_BIGRAM_BPB = 4.68, 3.34  # pydoc, studies.md §3.1 (CPython 3.11.7)
LM_HYBRID_TOL = 0.10
LM_SKIP_FACTOR = 1.10


# -- reading runs ----------------------------------------------------------------------------


@dataclasses.dataclass
class RunRecord:
  """One run directory: its flattened config, metrics rows and final row (None if unfinished)."""

  path: str
  config: dict[str, Any]
  info: dict[str, Any]
  rows: list[dict]
  final: dict | None
  error: str | None = None

  @property
  def task(self) -> str:
    return str(self.config.get("task", "unknown"))

  def final_metrics(self) -> dict[str, float]:
    if not self.final:
      return {}
    return {k: float(v) for k, v in self.final.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("step", "time_s")}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become tuples."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
  return out


def find_runs(directory: str) -> tuple[list[RunRecord], list[tuple[str, str]]]:
  """Runs under ``directory`` and ``(path, first error line)`` of runs that never started."""
  runs, broken = [], []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    if "config.json" in files:
      dirs[:] = []
      with open(os.path.join(root, "config.json")) as f:
        info = json.load(f)
      try:
        rows = read_jsonl(os.path.join(root, "metrics.jsonl"))
      except json.JSONDecodeError:
        rows = []
      finals = [r for r in rows if r.get("final")]
      runs.append(RunRecord(root, flatten(info.get("config", {})), info, rows,
                            finals[-1] if finals else None, _error_line(root)))
    elif "error.txt" in files:
      broken.append((root, _error_line(root) or ""))
      dirs[:] = []
  return runs, broken


def _error_line(path: str) -> str | None:
  p = os.path.join(path, "error.txt")
  if not os.path.exists(p):
    return None
  with open(p, errors="replace") as f:
    lines = [l.strip() for l in f if l.strip()]
  last = [l for l in lines if not l.startswith(("command:", "wall_s:", "---"))]
  return " / ".join(dict.fromkeys([lines[0]] + last[-1:])) if lines else "failed"


# -- grouping and formatting -----------------------------------------------------------------


def _ignored(key: str, extra: Sequence[str] = ()) -> bool:
  return (key in IGNORED or key.startswith(IGNORED_PREFIXES)
          or any(key == e or key.startswith(e + ".") for e in extra))


def setting_key(config: dict, exclude: Sequence[str] = ()) -> str:
  """Canonical text of ``config`` without the seed, bookkeeping and ``exclude`` keys."""
  return json.dumps({k: v for k, v in config.items() if not _ignored(k, exclude)},
                    sort_keys=True, default=str)


@dataclasses.dataclass
class Group:
  """Runs sharing one setting (all but the seed)."""

  config: dict[str, Any]
  runs: list[RunRecord]
  label: str = ""

  def values(self, metric: str) -> list[float]:
    return [r.final_metrics()[metric] for r in self.runs if metric in r.final_metrics()]

  def mean(self, metric: str) -> float | None:
    v = self.values(metric)
    return float(np.mean(v)) if v else None


def _sort_value(v):
  return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def group_runs(runs: Iterable[RunRecord], exclude: Sequence[str] = (),
               default_keys: Sequence[str] = ("attention.name",)) -> list[Group]:
  """Finished runs grouped by :func:`setting_key`, labelled by the keys that vary (by
  ``default_keys`` when nothing varies)."""
  groups: dict[str, Group] = {}
  for r in runs:
    if r.final is None:
      continue
    groups.setdefault(setting_key(r.config, exclude), Group(r.config, [])).runs.append(r)
  out = list(groups.values())
  varying = varying_keys([g.config for g in out], exclude)
  if not varying and out:
    varying = [k for k in default_keys if k in out[0].config]
  for g in out:
    g.label = label(g.config, varying)
  out.sort(key=lambda g: [(k != "attention.name" or g.config.get(k) != "standard",
                           g.config.get(k) not in (None, False, "none"),
                           _sort_value(g.config.get(k))) for k in varying])
  return out


def varying_keys(configs: Sequence[dict], exclude: Sequence[str] = ()) -> list[str]:
  """Keys whose value differs between configs (``attention.name`` first, impl dropped when the
  labels stay distinct without it)."""
  keys = sorted({k for c in configs for k in c if not _ignored(k, exclude)})
  vary = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
  vary.sort(key=lambda k: (k != "attention.name", k != "attention.layout", k))
  if "attention.impl" in vary:
    rest = [k for k in vary if k != "attention.impl"]
    if len({tuple(json.dumps(c.get(k), default=str) for k in rest) for c in configs}) == len(
        {tuple(json.dumps(c.get(k), default=str) for k in vary) for c in configs}):
      vary = rest
  # Options that follow from the variant (each variant has its own fields) are not labels.
  vary = [k for k in vary if not (k.startswith("attention.options.")
                                  and "attention.name" in vary and _follows_name(configs, k))]
  return vary


def _follows_name(configs: Sequence[dict], key: str) -> bool:
  by_name: dict[str, set] = {}
  for c in configs:
    by_name.setdefault(c.get("attention.name"), set()).add(json.dumps(c.get(key), default=str))
  return all(len(v) == 1 for v in by_name.values())


def _option_default(name: str | None, option: str):
  """The registry default of a variant's option (None when unknown)."""
  from attnlab.models import attention
  cls = attention.REGISTRY.get(name)
  fields = {f.name: f.default for f in dataclasses.fields(cls.Options)} if cls else {}
  return fields.get(option)


def label(config: dict, varying: Sequence[str]) -> str:
  """``'`relational`, hybrid, H=2'`` from the varying keys of a config. A key switched off
  (``none``, None, False) is left out: ``cb_position=none`` is the plain model."""
  parts = []
  for k in varying:
    v = config.get(k)
    if k.startswith("attention.options.") and k.count(".") == 2:
      default = _option_default(config.get("attention.name"), k.split(".")[-1])
      if v is None or v == default:  # the variant's own default is the plain layer
        continue
      parts.append(f"{k.split('.')[-1]}={v}")
      continue
    if v is None or v is False or v == "none":
      continue
    if k == "attention.name":
      parts.append(f"`{v}`")
    elif k == "attention.layout":
      parts.append(str(v))
    else:
      parts.append(f"{ALIASES.get(k, k.split('.')[-1] if k.count('.') < 2 else k)}={v}")
  return ", ".join(parts) or "all runs"


def fmt(x: float | None, digits: int = 3) -> str:
  return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def cell(values: Sequence[float], digits: int = 3) -> str:
  """``'0.245 ± 0.003 (n=3)'`` (ddof = 1); ``'0.245 ±— (n=1)'``; ``'—'`` when empty."""
  v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
  if not v:
    return "—"
  if len(v) == 1:
    return f"{v[0]:.{digits}f} ±— (n=1)"
  return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f} (n={len(v)})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def check(ok: bool, text: str) -> str:
  """A bullet of the acceptance list: ``- text: ok`` or ``- text: **FAIL**``."""
  return f"- {text}: {'ok' if ok else '**FAIL**'}"


def _metric_index(metrics: Iterable[str], pattern: str) -> dict:
  """``{parameter: key}`` for keys matching ``pattern`` (one integer group)."""
  out = {}
  for k in metrics:
    m = re.fullmatch(pattern, k)
    if m:
      out[int(m.group(1))] = k
  return dict(sorted(out.items()))


def _all_final_keys(groups: Sequence[Group]) -> set[str]:
  return {k for g in groups for r in g.runs for k in r.final_metrics()}


def _reference_means(groups: Sequence[Group], key: str) -> float | None:
  v = [r.final_metrics()[key] for g in groups for r in g.runs if key in r.final_metrics()]
  return float(np.mean(v)) if v else None


def _twin(group: Group, groups: Sequence[Group], name: str,
          ignore: Sequence[str] = ()) -> Group | None:
  """The group with attention ``name`` and otherwise the same setting as ``group``."""
  ignore = tuple(ignore) or VARIANT_KEYS
  key = setting_key(group.config, ignore)
  for g in groups:
    if g.config.get("attention.name") == name and setting_key(g.config, ignore) == key:
      return g
  return None


def _plain_standard(group: Group, groups: Sequence[Group], ignore: Sequence[str]) -> Group | None:
  """``standard`` of the group's setting without block-level CB (``model.cb_position``): the
  reference of every row, the CB-placement rows included."""
  key = setting_key(group.config, tuple(ignore) + ("model.cb_position",))
  matches = [g for g in groups if g.config.get("attention.name") == "standard"
             and setting_key(g.config, tuple(ignore) + ("model.cb_position",)) == key]
  matches.sort(key=lambda g: g.config.get("model.cb_position", "none") != "none")
  return matches[0] if matches else None


def _equal_printed(a: float | None, b: float | None, digits: int = 3) -> bool:
  """Equal at the printed precision: within half a unit of the last printed digit (a strict
  comparison of the rounded text would fail on ties such as 5.56147 vs 5.56155)."""
  return a is not None and b is not None and abs(a - b) < 0.5 * 10 ** -digits


def _memory_efficient_checks(groups: Sequence[Group], metrics: Sequence[str]) -> list[str]:
  lines = []
  for g in groups:
    if g.config.get("attention.name") != "memory_efficient":
      continue
    twin = _twin(g, groups, "standard")
    if twin is None:
      continue
    # Same seeds on both sides: the claim is per seed ("same seed, same numbers").
    seeds = ({r.config.get("seed") for r in g.runs}
             & {r.config.get("seed") for r in twin.runs})
    mine = Group(g.config, [r for r in g.runs if r.config.get("seed") in seeds])
    theirs = Group(twin.config, [r for r in twin.runs if r.config.get("seed") in seeds])
    pairs = [(m, mine.mean(m), theirs.mean(m)) for m in metrics
             if mine.mean(m) is not None and theirs.mean(m) is not None]
    bad = [f"{m}: {fmt(a)} vs {fmt(b)}" for m, a, b in pairs if not _equal_printed(a, b)]
    worst = max((abs(a - b) for _, a, b in pairs), default=0.0)
    lines.append(check(bool(pairs) and not bad,
                       f"`memory_efficient` = `standard` ({g.label}; seeds "
                       f"{sorted(seeds, key=str)}; {len(pairs)} metrics, "
                       f"largest |Δ| {worst:.1e}"
                       + (f"; differ: {', '.join(bad)}" if bad else "") + ")"))
  return lines


# -- plotting helpers ------------------------------------------------------------------------


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _band(ax, x, ys: np.ndarray, label_text: str, **kw):
  """Mean line with a shaded mean ± std band over seeds (rows of ``ys``)."""
  mean = np.nanmean(ys, axis=0)
  line, = ax.plot(x, mean, label=label_text.replace("`", ""), **kw)
  if ys.shape[0] > 1:
    std = np.nanstd(ys, axis=0, ddof=1)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
  return line


REFERENCE_STYLES = [dict(color=c, linestyle=ls, linewidth=1.2) for c, ls in (
    ("0.15", "--"), ("0.45", "-."), ("0.3", ":"), ("0.6", "--"), ("0.2", (0, (5, 1, 1, 1))),
    ("0.5", (0, (1, 2))), ("0.35", (0, (8, 2))))]


def _curve(group: Group, xs: Sequence, key_of: Callable[[Any], str]) -> np.ndarray:
  return np.array([[r.final_metrics().get(key_of(x), np.nan) for x in xs] for r in group.runs])


def _series(group: Group, metric: str, splits=("eval", "test")) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values [seeds, steps]) of ``metric`` over training, on the steps all seeds share."""
  per_run = []
  for r in group.runs:
    per_run.append({row["step"]: row[metric] for row in r.rows
                    if row.get("split") in splits and isinstance(row.get(metric), (int, float))})
  steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
  return np.array(steps), np.array([[p[s] for s in steps] for p in per_run])


def _save(fig, directory: str, name: str) -> str:
  path = os.path.join(directory, name)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  _pyplot().close(fig)
  return name


def train_loss_plot(groups: Sequence[Group], directory: str, task: str,
                    shade: Sequence[tuple[float, float]] = ()) -> str | None:
  """Training loss vs step per group (log y), with optional shaded step ranges."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  drawn = False
  for g in groups:
    steps, ys = _series(g, "loss", splits=("train",))
    if len(steps):
      _band(ax, steps, ys, g.label)
      drawn = True
  if not drawn:
    plt.close(fig)
    return None
  for i, (a, b) in enumerate(shade):
    ax.axvspan(a, b, color="grey", alpha=0.08 if i % 2 else 0.0, linewidth=0)
  ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("training loss (mean squared error)" if task != "lm"
                else "training loss (nats/byte)")
  ax.set_title(f"{task}: training loss (mean ± std over seeds)")
  ax.legend(fontsize=7)
  return _save(fig, directory, f"{task}_train_loss.png")


# -- study sections --------------------------------------------------------------------------


def icl_regression_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """Table A1/A2 (MSE at each L), reference rows, acceptance bands, MSE-vs-L plot."""
  multitask = [r for r in runs if r.config.get("data.kind") == "multitask"]
  runs = [r for r in runs if r.config.get("data.kind") != "multitask"]
  if not runs:
    return _multitask_section(multitask, directory)
  groups = group_runs(runs, default_keys=("attention.name", "model.num_heads"))
  keys = _all_final_keys(groups)
  lengths = _metric_index(keys, r"mse@L=(\d+)")
  header = ["setting"] + [f"MSE@L={l}" for l in lengths]
  rows = [[g.label] + [cell(g.values(k)) for k in lengths.values()] for g in groups]
  refs = {name: _metric_index(keys, rf"{re.escape(name)}_mse@L=(\d+)")
          for name in HE_REFERENCE_LABELS}
  for name, idx in refs.items():
    if idx:
      rows.append([f"*{HE_REFERENCE_LABELS[name]}* (computed: closed form on the same test "
                   f"prompts)"] + [f"*{fmt(_reference_means(groups, idx[l]))}*"
                                   if l in idx else "—" for l in lengths])
  isotropic = [g for g in groups if g.config.get("data.d") == 5
               and g.config.get("data.covariance", "isotropic") == "isotropic"]
  if isotropic:
    for h, vals in HE_PUBLISHED_TRAINED.items():
      rows.append([f"*trained H={h}* (published, `plots.ipynb`, 0.1 removed)"]
                  + [f"*{vals[l]:.3f}*" if l in vals else "—" for l in lengths])
  checks = _icl_checks(groups, refs)
  checks += _memory_efficient_checks(groups, list(lengths.values()))
  text = ["## In-context linear regression (studies.md §1)", "",
          markdown_table(header, rows), "",
          "Table A1/A2. Test MSE (raw, including the σ² = 0.1 label-noise floor) on fixed test "
          "sets shared by all runs, mean ± std over seeds (ddof = 1). Acceptance (§1.5, "
          f"`standard` at L = 40): H ≥ 2 in [{HE_BANDS['multi'][0]}, {HE_BANDS['multi'][1]}]; "
          f"H = 1 in [{HE_BANDS['single'][0]}, {HE_BANDS['single'][1]}]; H ≥ 2 within "
          f"±{HE_BANDS['dgd_tol']} of debiased GD at every L; smoke (≤ 2k steps, §1.3): "
          "MSE@40 < 0.30 (H = 2), < 0.45 (H = 1); `memory_efficient` = `standard`."]
  if checks:
    text += [""] + checks
  plots = _icl_plots(groups, lengths, refs, directory)
  plots += [p for p in (train_loss_plot(groups, directory, "icl_regression"),
                        _head_dynamics_plot(groups, directory)) if p]
  if multitask:
    more, files = _multitask_section(multitask, directory)
    text += ["", more]
    plots += files
  return "\n".join(text), plots


HE_OMEGA_REF, HE_MU_REF = 0.13, 3.5  # studies.md §1.6 reference lines (omega ÷ sqrt(d+2))


def _head_dynamics_plot(groups: Sequence[Group], directory: str) -> str | None:
  """A-P2: omega_h and mu_h against step (first seed of each group that logged them), with the
  ±0.13 and ±3.5 reference lines. Heads are not comparable across seeds (any permutation and
  sign pairing is a solution), so seeds are not averaged."""
  shown = []
  for g in groups:
    run = min(g.runs, key=lambda r: r.config.get("seed", 0))
    rows = [r for r in run.rows if r.get("split") == "train" and "omega@h=0" in r]
    if rows:
      shown.append((g, run, rows))
  if not shown:
    return None
  plt = _pyplot()
  fig, axes = plt.subplots(len(shown), 2, figsize=(10, 2.8 * len(shown)), squeeze=False)
  for (g, run, rows), (ax_w, ax_m) in zip(shown, axes):
    steps = [r["step"] for r in rows]
    heads = sorted(int(k.split("=")[1]) for k in rows[-1] if k.startswith("omega@h="))
    for h in heads:
      ax_w.plot(steps, [r.get(f"omega@h={h}") for r in rows], label=f"head {h}")
      ax_m.plot(steps, [r.get(f"mu@h={h}") for r in rows], label=f"head {h}")
    for ax, ref, name in ((ax_w, HE_OMEGA_REF, "ω_h (mean diag M_xx ÷ sqrt(d+2))"),
                          (ax_m, HE_MU_REF, "μ_h (OV entry on y)")):
      for sign in (1, -1):
        ax.axhline(sign * ref, color="0.5", linestyle="--", linewidth=0.8)
      ax.axhline(0, color="0.85", linewidth=0.6, zorder=0)
      ax.set_xscale("log")
      ax.set_xlabel("training step")
      ax.set_ylabel(name)
      ax.set_title(f"{g.label.replace('`', '')}, seed {run.config.get('seed', 0)}", fontsize=9)
      ax.legend(fontsize=6)
  fig.suptitle("Per-head ω and μ during training (dashed: ±0.13 and ±3.5, studies.md §1.6)",
               fontsize=10)
  return _save(fig, directory, "icl_regression_heads_vs_step.png")


def _head_counts(run: RunRecord) -> tuple[int, int] | None:
  """(active heads, shared heads) of a multitask run from its final per-head, per-task mu."""
  from attnlab.train.icl_heads import serving_heads
  mu = {}
  for key, value in run.final_metrics().items():
    m = re.fullmatch(r"mu@h=(\d+),t=(\d+)", key)
    if m:
      mu[(int(m.group(1)), int(m.group(2)))] = value
  if not mu:
    return None
  heads = sorted({h for h, _ in mu})
  tasks = sorted({t for _, t in mu})
  s = serving_heads([[mu.get((h, t), 0.0) for t in tasks] for h in heads])
  return int(s["active"].sum()), int(s["shared"].sum())


def _multitask_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """Table A5 (studies.md §1.9): per-task test MSE, active and shared heads per H."""
  groups = group_runs(runs, default_keys=("attention.name", "model.num_heads"))
  keys = _all_final_keys(groups)
  per_task = _metric_index(keys, r"mse_task(\d+)@L=\d+")
  header = (["setting"] + [f"MSE task {t}" for t in per_task]
            + ["active heads", "shared heads (serve both tasks)"])
  counts_of = {id(g): [c for c in (_head_counts(r) for r in g.runs) if c is not None]
               for g in groups}
  rows = []
  for g in groups:
    counts = counts_of[id(g)]
    rows.append([g.label] + [cell(g.values(k)) for k in per_task.values()]
                + [cell([c[0] for c in counts], 1) if counts else "n/a",
                   cell([c[1] for c in counts], 1) if counts else "n/a"])
  for name, text in (("ridge", "Bayes posterior mean per task (ridge on its coordinates)"),
                     ("zero", "zero predictor")):
    idx = _metric_index(keys, rf"{name}_mse_task(\d+)@L=\d+")
    if idx:
      rows.append([f"*{text}* (computed: same test prompts)"]
                  + [f"*{fmt(_reference_means(groups, idx[t]))}*" if t in idx else "—"
                     for t in per_task] + ["", ""])
  text = ["## Multi-task superposition (studies.md §1.9, table A5)", "",
          markdown_table(header, rows), "",
          "Table A5. Two tasks y1 = β1ᵀx[1:4], y2 = β2ᵀx[3:6] (d = 6, overlapping coordinates "
          "3-4), read out by two outputs; test MSE per task on noiseless query labels, mean ± "
          "std over seeds. Head h serves task t if |μ_{h,t}| > 0.1 max |μ| (final parameters); "
          "shared heads serve both. Published claim: shared heads at H = 3 (superposition), "
          "none at H ≥ 4 (split-up)."]
  checks = []
  for g in groups:
    h = g.config.get("model.num_heads")
    counts = counts_of[id(g)]
    if h is None or not counts:
      continue
    if h == 3:
      checks.append(check(all(c[1] >= 1 for c in counts),
                          f"{g.label}: at least one shared head (found {[c[1] for c in counts]})"))
    elif h >= 4:
      checks.append(check(all(c[1] == 0 for c in counts),
                          f"{g.label}: no shared head (found {[c[1] for c in counts]})"))
  if checks:
    text += [""] + checks
  plots = [p for p in (train_loss_plot(groups, directory, "icl_multitask"),) if p]
  return "\n".join(text), plots


def _icl_checks(groups: Sequence[Group], refs: dict) -> list[str]:
  out = []
  dgd = refs.get("dgd") or refs.get("debiased_gd") or {}
  for g in groups:
    c = g.config
    if (c.get("attention.name") != "standard" or c.get("data.d") != 5
        or c.get("data.covariance", "isotropic") != "isotropic"
        or not math.isclose(c.get("data.noise_var", 0.1), 0.1)):
      continue
    h = c.get("model.num_heads")
    m40 = g.mean("mse@L=40")
    if m40 is None or h is None:
      continue
    lo, hi = HE_BANDS["multi"] if h >= 2 else HE_BANDS["single"]
    out.append(check(lo <= m40 <= hi, f"{g.label}: MSE@40 = {m40:.3f} in [{lo}, {hi}]"))
    if c.get("steps", 0) <= HE_BANDS["smoke_steps"] and h in HE_BANDS["smoke"]:
      bound = HE_BANDS["smoke"][h]
      out.append(check(m40 < bound, f"{g.label}: smoke MSE@40 = {m40:.3f} < {bound}"))
    if h >= 2 and dgd:
      gaps = {l: abs(g.mean(f"mse@L={l}") - _reference_means([g], k)) for l, k in dgd.items()
              if g.mean(f"mse@L={l}") is not None and _reference_means([g], k) is not None}
      if gaps:
        worst = max(gaps, key=gaps.get)
        out.append(check(gaps[worst] <= HE_BANDS["dgd_tol"],
                         f"{g.label}: |MSE − debiased GD| ≤ {HE_BANDS['dgd_tol']} at every L "
                         f"(largest {gaps[worst]:.3f} at L={worst})"))
  return out


def _icl_plots(groups, lengths: dict, refs: dict, directory: str) -> list[str]:
  """A-P3 (``standard`` at every H, with the closed-form predictors) and, when other variants
  ran, A-P5 (every variant at the H values they ran at)."""
  if not lengths or not groups:
    return []
  std = [g for g in groups if g.config.get("attention.name") == "standard"]
  others = [g for g in groups if g.config.get("attention.name") != "standard"]
  out = []
  if std or not others:
    out.append(_icl_plot(std or groups, lengths, refs, directory, "icl_regression_mse_vs_L.png",
                         "MSE vs prompt length (`standard`)"))
  if others:
    heads = {g.config.get("model.num_heads") for g in others}
    chosen = [g for g in groups if g.config.get("model.num_heads") in heads]
    out.append(_icl_plot(chosen, lengths, refs, directory,
                         "icl_regression_variants_mse_vs_L.png",
                         "MSE vs prompt length per variant"))
  return out


def _icl_plot(groups, lengths: dict, refs: dict, directory: str, name: str,
              title: str) -> str:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  ls = list(lengths)
  for g in groups:
    _band(ax, ls, _curve(g, ls, lambda l: f"mse@L={l}"), g.label, marker="o")
  present = [(key, idx) for key, idx in refs.items() if idx]
  for (key, idx), style in zip(present, REFERENCE_STYLES):
    x = [l for l in ls if l in idx]
    ax.plot(x, [_reference_means(groups, idx[l]) for l in x], label=HE_REFERENCE_LABELS[key],
            **style)
  ax.set_yscale("log")
  ax.set_xlabel("test prompt length L (context pairs)")
  ax.set_ylabel("test MSE (includes the 0.1 noise floor)")
  ax.set_title(f"In-context regression: {title.replace('`', '')}")
  ax.legend(fontsize=6, ncol=2)
  return _save(fig, directory, name)


def lm_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """Table L1: variants × {Uniform, Hybrid, Skip} val bpb with ratios to ``standard``."""
  layout = ("attention.layout",)
  row_groups = group_runs(runs, exclude=layout)  # one per table row (layouts merged)
  all_groups = group_runs(runs)  # one per (row, layout)
  cells: dict[str, dict[str, Group]] = {setting_key(g.config, layout): {} for g in row_groups}
  for g in all_groups:
    cells[setting_key(g.config, layout)][g.config.get("attention.layout")] = g

  def reference(row: Group) -> Group | None:
    """``standard``'s Uniform group (else Hybrid: the same model) of the row's setting."""
    twin = _plain_standard(row, row_groups, VARIANT_KEYS + layout)
    if twin is None:
      return None
    layouts = cells[setting_key(twin.config, layout)]
    return layouts.get("uniform") or layouts.get("hybrid")

  header = ["variant", "Uniform val bpb", "Hybrid val bpb", "Skip val bpb", "params",
            "train tokens/s (Uniform)"]
  table, best_rows, checks = [], [], []
  for row in row_groups:
    layouts = cells[setting_key(row.config, layout)]
    ref = reference(row)
    ref_bpb = ref.mean("bpb") if ref else None
    is_std = row.config.get("attention.name") == "standard"

    def with_ratio(group: Group | None, metric: str) -> str:
      if group is None or not group.values(metric):
        return "—"
      text = cell(group.values(metric))
      if ref_bpb is not None:
        text += f" (×{2 ** (group.mean(metric) - ref_bpb):.2f})"
      return text

    uni, hyb = layouts.get("uniform"), layouts.get("hybrid")
    table.append([row.label, with_ratio(uni, "bpb"), with_ratio(hyb, "bpb"),
                  "—" if is_std else with_ratio(hyb, "skip_bpb"), _param_text(uni or hyb),
                  _tokens_per_s(uni) if uni else "—"])
    best_rows.append([row.label, _best_text(uni), _best_text(hyb)])
    hyb_bpb = hyb.mean("bpb") if hyb else None
    if hyb_bpb is not None and ref_bpb is not None and not is_std:
      checks.append(check(hyb_bpb <= (1 + LM_HYBRID_TOL) * ref_bpb,
                          f"{row.label} Hybrid within {LM_HYBRID_TOL:.0%} of `standard` "
                          f"({fmt(hyb_bpb)} vs {fmt(ref_bpb)} bpb)"))
    skip_bpb = hyb.mean("skip_bpb") if hyb else None
    if (skip_bpb is not None and hyb_bpb is not None
        and row.config.get("attention.name") not in ("standard", "memory_efficient")):
      checks.append(check(skip_bpb > LM_SKIP_FACTOR * hyb_bpb,
                          f"{row.label} Skip far worse than its Hybrid (> ×{LM_SKIP_FACTOR} "
                          f"bpb: {fmt(skip_bpb)} vs {fmt(hyb_bpb)})"))
    if is_std and row.config.get("data.corpus") == "pydoc":
      for name, grp in (("Uniform", uni), ("Hybrid", hyb)):
        b = grp.mean("bpb") if grp else None
        if b is not None:
          checks.append(check(b < LM_UNIGRAM_BPB,
                              f"{row.label} {name} beats the unigram ({fmt(b)} < "
                              f"{LM_UNIGRAM_BPB} bpb; the bigram's {LM_BIGRAM_BPB}: "
                              f"{'beaten' if b < LM_BIGRAM_BPB else 'not beaten'})"))
  checks += _memory_efficient_checks(all_groups, ["bpb", "skip_bpb"])
  devices = sorted({str(r.info.get("device", "?")) for g in all_groups for r in g.runs})
  text = ["## Language modelling ablation (studies.md §3.2, table L1)", "",
          markdown_table(header, table), "",
          "Table L1. Validation bits per byte at the end of training, mean ± std over seeds "
          "(ddof = 1); in brackets the perplexity ratio to `standard` (2^Δbpb). Uniform: the "
          "variant in every layer; Hybrid: the variant in odd layers (1-indexed), `standard` in "
          "even ones; Skip: the trained Hybrid evaluated with its variant layers deleted "
          "(`eval.skip_layers`). Tokens/s: train steps between the first and last logged step, "
          f"evaluation included, on {', '.join(devices)}. Expected (§3.2): every Hybrid within "
          f"{LM_HYBRID_TOL:.0%} of `standard`; Skip far worse than its Hybrid; "
          "`memory_efficient` = `standard` in every column.", ""]
  text += checks
  text += ["", markdown_table(["variant", "best val bpb @ step (Uniform)",
                               "best val bpb @ step (Hybrid)"], best_rows), "",
           "Best validation bpb during training (mean over seeds) and its step (the corpus is "
           "small; §3.1)."]
  l2_text, l2_plot = _lm_context_section(all_groups, directory)
  text += l2_text
  plots = [p for p in (_lm_plot(all_groups, directory),
                       train_loss_plot(all_groups, directory, "lm"), l2_plot) if p]
  return "\n".join(text), plots


def _context_curve(groups: Sequence[Group]) -> tuple[list[int], dict[int, str]]:
  """Evaluation contexts present (``bpb@ctx=c`` plus each run's ``data.seq_len``) and keys."""
  keys = _metric_index(_all_final_keys(groups), r"bpb@ctx=(\d+)")
  if not keys:
    return [], {}
  for g in groups:
    keys.setdefault(int(g.config.get("data.seq_len", 0)), "bpb")
  return sorted(keys), keys


def _lm_context_section(groups: Sequence[Group], directory: str) -> tuple[list[str], str | None]:
  """Table L2 (val bpb at each evaluation context) and plot L-P2, for runs that logged it."""
  groups = [g for g in groups if _metric_index(_all_final_keys([g]), r"bpb@ctx=(\d+)")]
  contexts, keys = _context_curve(groups)
  if not contexts:
    return [], None
  rows = [[g.label] + [cell([_bpb_at(r, c, keys[c]) for r in g.runs]) for c in contexts]
          for g in groups]
  text = ["", "### Table L2: validation bpb against evaluation context", "",
          markdown_table(["variant"] + [f"ctx={c}" for c in contexts], rows), "",
          "Table L2. The same validation bytes at every context: each training-length window "
          "cut into windows of `c` bytes (`eval.contexts`), so no prediction sees more than "
          "`c` earlier bytes; mean ± std over seeds. Reported only (§3.2 sets no target)."]
  plt = _pyplot()
  layouts = sorted({str(g.config.get("attention.layout")) for g in groups},
                   key=lambda l: (l != "uniform", l))
  fig, axes = plt.subplots(1, len(layouts), figsize=(5.5 * len(layouts), 4), squeeze=False,
                           sharey=True)
  for ax, layout in zip(axes[0], layouts):
    for g in groups:
      if str(g.config.get("attention.layout")) != layout:
        continue
      ys = np.array([[_bpb_at(r, c, keys[c]) for c in contexts] for r in g.runs])
      _band(ax, contexts, ys, g.label, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(contexts, [str(c) for c in contexts])
    ax.set_xlabel("evaluation context (bytes)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(layout)
    ax.legend(fontsize=7)
  fig.suptitle("Validation bpb vs evaluation context (mean ± std over seeds)")
  return text, _save(fig, directory, "lm_bpb_vs_context.png")


def _bpb_at(run: RunRecord, ctx: int, key: str) -> float:
  """Final bpb at ``ctx``: the ``bpb@ctx`` key, or ``bpb`` where ``ctx`` is the run's length
  (NaN where the run has neither)."""
  if key == "bpb" and int(run.config.get("data.seq_len", 0)) != ctx:
    return np.nan
  return float(run.final_metrics().get(key, np.nan))


def _best_text(group: Group | None) -> str:
  if group is None:
    return "—"
  steps, ys = _series(group, "bpb")
  if not len(steps):
    return "—"
  mean = ys.mean(axis=0)
  i = int(np.argmin(mean))
  return f"{mean[i]:.3f} @ {int(steps[i])}"


def _param_text(group: Group | None) -> str:
  n = _param_count(group.runs[0].info.get("config", {})) if group else None
  return "—" if n is None else f"{n / 1e6:.3f}M"


def _param_count(config: dict) -> int | None:
  """Parameters of an LM run's model (abstract init, nothing computed)."""
  try:
    import jax
    import ml_collections
    from flax import nnx

    from attnlab.models.transformer import LanguageModel
    from attnlab.train import settings
    run = settings.from_config(ml_collections.ConfigDict(config))
    model = nnx.eval_shape(lambda: LanguageModel(run.task_settings.model,
                                                 rngs=nnx.Rngs(params=0, dropout=1)))
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
  except Exception:  # noqa: BLE001 -- a report never fails on an optional column
    return None


def _tokens_per_s(group: Group) -> str:
  rates = []
  for r in group.runs:
    train = sorted((row["step"], row["time_s"]) for row in r.rows if row.get("split") == "train")
    if len(train) >= 2 and train[-1][1] > train[0][1]:
      per_step = r.config.get("batch_size", 0) * r.config.get("data.seq_len", 0)
      rates.append((train[-1][0] - train[0][0]) * per_step / (train[-1][1] - train[0][1]))
  return f"{np.mean(rates):,.0f}" if rates else "—"


def _lm_plot(groups: Sequence[Group], directory: str) -> str | None:
  layouts = sorted({g.config.get("attention.layout") for g in groups},
                   key=lambda l: (l != "uniform", str(l)))
  if not groups:
    return None
  plt = _pyplot()
  names = sorted({str(g.config.get("attention.name")) for g in groups},
                 key=lambda n: (n != "standard", n))
  colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
  fig, axes = plt.subplots(1, len(layouts), figsize=(5.5 * len(layouts), 4), squeeze=False,
                           sharey=True)
  for ax, layout in zip(axes[0], layouts):
    for g in groups:
      if g.config.get("attention.layout") != layout:
        continue
      steps, ys = _series(g, "bpb")
      if len(steps):
        name = str(g.config.get("attention.name"))
        _band(ax, steps, ys, name, marker=".", color=colors[name])
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"{layout}")
    ax.legend(fontsize=7)
  fig.suptitle("Validation bpb vs step (mean ± std over seeds)")
  return _save(fig, directory, "lm_val_bpb_vs_step.png")


def icl_garg_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """Table B1 (normalised error at k = d/2, d−1, d, 2d) with baselines; nerr-vs-k plot."""
  groups = group_runs(runs)
  keys = _all_final_keys(groups)
  curve = _metric_index(keys, r"nerr@k=(\d+)")
  d = int(groups[0].config.get("data.d", 0)) if groups else 0
  ks = [k for k in dict.fromkeys((d // 2, d - 1, d, 2 * d)) if k in curve]
  header = ["setting"] + [f"k={k}" for k in ks]
  rows = [[g.label] + [cell(g.values(curve[k])) for k in ks] for g in groups]
  base = {name: _metric_index(keys, rf"{re.escape(name)}_nerr@k=(\d+)") for name in GARG_LABELS}
  for name, idx in base.items():
    if idx:
      rows.append([f"*{GARG_LABELS[name]}* (computed: same test prompts)"]
                  + [f"*{fmt(_reference_means(groups, idx[k]))}*" if k in idx else "—"
                     for k in ks])
  checks = _memory_efficient_checks(groups, list(curve.values()))
  ls = base.get("least_squares", {})
  for g in groups:
    if 2 * d in curve and 2 * d in ls and g.mean(curve[2 * d]) is not None:
      checks.append(f"- {g.label}: normalised error at k = 2d is "
                    f"{fmt(g.mean(curve[2 * d]))} (least squares "
                    f"{fmt(_reference_means(groups, ls[2 * d]))}; no acceptance band)")
  dims = sorted({g.config.get("data.d") for g in groups})
  text = ["## Garg et al. in-context linear functions (studies.md §2, table B1)", "",
          markdown_table(header, rows), "",
          f"Table B1. Normalised squared error (squared error / d, d = "
          f"{', '.join(str(x) for x in dims)}; the zero predictor scores 1) of the prediction "
          "of y_k from k in-context examples on fixed test prompts, mean ± std over seeds "
          "(ddof = 1). Published headline: the trained transformer tracks least squares. "
          "Acceptance: `memory_efficient` = `standard`."]
  if checks:
    text += [""] + checks
  plots = [p for p in (_garg_plot(groups, curve, base, d, directory),
                       train_loss_plot(groups, directory, "icl_garg", _curriculum_spans(groups)))
           if p]
  return "\n".join(text), plots


def _curriculum_spans(groups: Sequence[Group]) -> list[tuple[float, float]]:
  if not groups:
    return []
  c = groups[0].config
  dims, points = c.get("curriculum.dims"), c.get("curriculum.points")
  if not dims or not points or (dims[0] == dims[1] and points[0] == points[1]):
    return []
  interval = int(dims[3])
  end = max(interval * math.ceil((dims[1] - dims[0]) / dims[2]),
            int(points[3]) * math.ceil((points[1] - points[0]) / points[2]))
  return [(s, min(s + interval, end)) for s in range(0, end, interval)]


def _garg_plot(groups, curve: dict, base: dict, d: int, directory: str) -> str | None:
  if not curve or not groups:
    return None
  plt = _pyplot()
  n = len(groups)
  cols = min(n, 3)
  rows_n = math.ceil(n / cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.4 * rows_n), squeeze=False,
                           sharey=True)
  ks = list(curve)
  for ax, g in zip(axes.flat, groups):
    _band(ax, ks, _curve(g, ks, lambda k: curve[k]), "model", color="black")
    if len(g.runs) == 1:  # one seed: the 90% bootstrap band over test prompts, when logged
      lo, hi = (_curve(g, ks, lambda k: f"nerr_{p}@k={k}")[0] for p in ("p05", "p95"))
      if np.isfinite(lo).all() and np.isfinite(hi).all():
        ax.fill_between(ks, lo, hi, color="black", alpha=0.15, linewidth=0,
                        label="90% bootstrap band (prompts)")
    present = [(name, idx) for name, idx in base.items() if idx]
    for (name, idx), style in zip(present, REFERENCE_STYLES):
      x = [k for k in ks if k in idx]
      ax.plot(x, [_reference_means(groups, idx[k]) for k in x], label=GARG_LABELS[name],
              **style)
    ax.axhline(1.0, color="0.8", linestyle="-", linewidth=0.8, zorder=0)
    ax.set_ylim(0, 1.25)
    ax.set_xlim(0, max(ks))
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("normalised squared error")
    ax.set_title(g.label.replace("`", ""), fontsize=9)
    ax.legend(fontsize=6)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  fig.suptitle(f"Garg et al. linear regression, d = {d} (band: mean ± std over seeds, or the "
               "90% bootstrap band over test prompts for one seed)", fontsize=10)
  return _save(fig, directory, "icl_garg_nerr_vs_k.png")


def generic_section(task: str, runs: Sequence[RunRecord], directory: str) -> tuple[str, list]:
  """Any other task: every final metric, one row per setting."""
  groups = group_runs(runs)
  keys = sorted(_all_final_keys(groups))
  rows = [[g.label] + [cell(g.values(k)) for k in keys] for g in groups]
  return "\n".join([f"## {task}", "", markdown_table(["setting"] + keys, rows)]), []


SECTIONS = {"icl_regression": icl_regression_section, "lm": lm_section,
            "icl_garg": icl_garg_section}


# -- entry point -----------------------------------------------------------------------------


def build_report(directory: str) -> tuple[str, list[str]]:
  """The Markdown report and the PNG files written under ``directory``."""
  runs, broken = find_runs(directory)
  if not runs and not broken:
    raise FileNotFoundError(f"no runs (config.json) under {directory!r}")
  finished = [r for r in runs if r.final is not None]
  wall = sum(float(r.final.get("time_s", 0)) for r in finished)
  devices = sorted({str(r.info.get("device", "?")) for r in runs})
  text = [f"# Report: {directory}", "",
          f"{len(runs) + len(broken)} runs: {len(finished)} finished, "
          f"{len(runs) - len(finished)} unfinished, {len(broken)} failed before starting. "
          f"Training wall time of the finished runs: {wall:,.0f} s (sum over runs) on "
          f"{', '.join(devices) or '?'}."]
  problems = [(r.path, r.error or "unfinished") for r in runs if r.final is None] + broken
  if problems:
    text += [""] + [f"- `{os.path.relpath(p, directory)}`: {e}" for p, e in problems]
  plots: list[str] = []
  for task in sorted({r.task for r in finished}):
    task_runs = [r for r in finished if r.task == task]
    section, files = SECTIONS.get(task, lambda rs, d: generic_section(task, rs, d))(
        task_runs, directory)
    text += ["", section]
    if files:
      text += [""] + [f"![{f}]({f})" for f in files]
    plots += files
  return "\n".join(text) + "\n", plots


def main(args) -> int:
  """``attnlab report DIR``: print the report and write ``DIR/report.md`` and the plots."""
  directory = args.directory
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory!r} is not a directory")
  text, _ = build_report(directory)
  with open(os.path.join(directory, "report.md"), "w") as f:
    f.write(text)
  print(text)
  return 0
