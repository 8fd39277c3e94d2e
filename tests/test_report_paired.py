"""Table L1's 95% intervals, paired differences and claim verdicts (train/report/paired.py,
train/report/claims.py) on synthetic run directories whose answers are known by hand."""

import json
import math
import os

import numpy as np
import pytest

from attnlab.train import report
from attnlab.train.report import claims, paired
from attnlab.train.report.runs import find_runs
from test_sweep_report import lm_config, table_lines, write_run

PATTERN = np.array([0.1, -0.1, 0.2, -0.2])  # per-window offsets with mean 0


def write_lm_run(root, name, layout, seed, bpb, skip=None, options=None, windows=True):
  """A fake finished LM run; its window_bpb.json has windows ``bpb + PATTERN`` (mean = bpb)."""
  config = lm_config(name, layout, seed)
  config["attention"]["options"] = dict(options or {})
  final = {"bpb": bpb, "loss": bpb * math.log(2)}
  if skip is not None:
    final["skip_bpb"] = skip
  run = f"{name},{layout},{json.dumps(options or {}, sort_keys=True)},{seed}"
  write_run(root, run, config, final)
  if windows:
    content = {"seq_len": 16, "starts": [0, 17, 34, 51], "bpb": list(bpb + PATTERN)}
    if skip is not None:
      content["skip_bpb"] = [skip] * 4
    with open(os.path.join(root, run, "window_bpb.json"), "w") as f:
      json.dump(content, f)


def test_t_quantiles_against_hand_values():
  assert paired.t975(1) == pytest.approx(12.7062, abs=1e-4)
  assert paired.t975(2) == pytest.approx(4.3027, abs=1e-4)
  assert paired.t975(4) == pytest.approx(2.7764, abs=1e-4)
  assert paired.t975(30) == pytest.approx(2.0423, abs=1e-4)
  # beyond the table: the expansion continues it smoothly and tends to the normal quantile
  assert paired.t975(30) > paired.t975(31) > paired.t975(120) > paired.t975(10 ** 6)
  assert paired.t975(60) == pytest.approx(2.0003, abs=1e-4)
  assert paired.t975(10 ** 6) == pytest.approx(1.95997, abs=1e-5)
  with pytest.raises(ValueError):
    paired.t975(0)


def test_t_quantiles_against_scipy():
  stats = pytest.importorskip("scipy.stats")
  for df in list(range(1, 40)) + [45.5, 60, 200, 5000]:
    assert paired.t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=3e-6)


def test_t_interval_by_hand():
  iv = paired.t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, se 1/sqrt(3)
  h = 4.302653 / math.sqrt(3)
  assert (iv.mean, iv.n) == (2.0, 3)
  assert iv.lo == pytest.approx(2 - h) and iv.hi == pytest.approx(2 + h)
  assert iv.se == pytest.approx(1 / math.sqrt(3))
  one = paired.t_interval([5.0])
  assert not one.decided and paired.interval_cell(one) == "5.000 [—] (n=1)"
  assert paired.t_interval([]) is None
  assert paired.interval_cell(iv) == f"2.000 [{2 - h:.3f}, {2 + h:.3f}] (n=3)"


def test_window_and_seed_pairing_by_hand(tmp_path):
  root = str(tmp_path)
  for seed, (a, b) in enumerate([(3.2, 3.0), (3.3, 3.0)]):
    write_lm_run(root, "random_seq_qk", "hybrid", seed, a)
    write_lm_run(root, "standard", "uniform", seed, b, windows=seed == 0)
  runs, _ = find_runs(root)
  a_runs = [r for r in runs if r.config["attention.name"] == "random_seq_qk"]
  b_runs = [r for r in runs if r.config["attention.name"] == "standard"]
  # seed 1 of standard has no window file: no window-paired interval, and a note says so
  p = paired.pair(a_runs, b_runs)
  assert p.seeds == (0, 1) and p.windows is None and "seeds 1" in p.notes[0]
  # differences 0.2 and 0.3: mean 0.25, sd 0.0707, se 0.05, t(1) = 12.706
  assert p.seed.mean == pytest.approx(0.25)
  assert p.seed.hi - p.seed.mean == pytest.approx(12.706205 * 0.05)
  for r in b_runs:  # flat windows for standard: every spread is the Hybrid's PATTERN
    with open(os.path.join(r.path, "window_bpb.json"), "w") as f:
      json.dump({"seq_len": 16, "starts": [0, 17, 34, 51], "bpb": [3.0] * 4}, f)
  p = paired.pair(a_runs, b_runs)
  # per window: (a - b) + PATTERN; sd = sqrt(0.1 / 3), se per seed sd / 2, two seeds
  se = math.sqrt(0.1 / 3) / 2 / math.sqrt(2)
  assert p.windows.mean == pytest.approx(0.25) and p.windows.se == pytest.approx(se)
  assert p.windows.hi == pytest.approx(0.25 + 2.446912 * se)  # df = 2 x (4 - 1)
  assert p.dominant == "windows"  # se 0.0645 > the seeds' 0.05
  # a coefficient (claim iv): a - 1.1 b
  q = paired.pair(a_runs, b_runs, coef=1.1)
  assert q.seed.mean == pytest.approx(0.25 - 0.3) and q.windows.mean == pytest.approx(-0.05)
  # other windows: not paired window by window
  with open(os.path.join(b_runs[1].path, "window_bpb.json"), "w") as f:
    json.dump({"seq_len": 16, "starts": [1, 17, 34, 51], "bpb": [3.0] * 4}, f)
  assert paired.pair(a_runs, b_runs).windows is None


def test_verdicts():
  iv = lambda lo, hi: paired.Interval((lo + hi) / 2, lo, hi, 3, (hi - lo) / 4)
  p = lambda s, w=None: paired.Paired((0, 1, 2), s, w)
  assert paired.verdict(p(iv(0.1, 0.3)), 0.0, "above")[0] == "supported"
  assert paired.verdict(p(iv(-0.3, -0.1)), 0.0, "above")[0] == "contradicted"
  assert paired.verdict(p(iv(-0.1, 0.3)), 0.0, "above")[0] == "not decided"
  assert paired.verdict(p(iv(-0.3, -0.1)), 0.0, "below")[0] == "supported"
  # both intervals must agree
  assert paired.verdict(p(iv(0.1, 0.3), iv(-0.05, 0.2)), 0.0, "above")[0] == "not decided"
  assert paired.verdict(p(paired.Interval(0.2, None, None, 1)), 0.0, "above")[0] == \
      "not decided"


def _sweep(root):
  """Known answers: (i) supported, (iii) contradicted, (v) not decided."""
  for seed, noise in enumerate((0.0, 0.01, -0.01)):
    write_lm_run(root, "standard", "uniform", seed, 3.0 + noise)
    # sequence-independent control: Uniform far worse, Hybrid a little worse than standard
    write_lm_run(root, "random_seq_qk", "uniform", seed, 3.6 + noise)
    write_lm_run(root, "random_seq_qk", "hybrid", seed, 3.05 + noise + (0.02 if seed else 0),
                 skip=3.05 + noise + (0.2, 0.9, 0.4)[seed])  # Skip - Hybrid ~ 0.5: undecided
    # the MLP control *better* than the sequence-independent one under Uniform: (iii) fails
    write_lm_run(root, "mlp_control", "uniform", seed, 3.3 + noise)
    write_lm_run(root, "mlp_control", "hybrid", seed, 3.1 + noise, skip=5.0 + noise)
    write_lm_run(root, "brand_new_variant", "uniform", seed, 2.9 + noise)


def test_claims_on_a_synthetic_sweep(tmp_path):
  root = str(tmp_path)
  _sweep(root)
  text, _ = report.build_report(root)
  assert "| (i) | Standard ≤ Hybrid (every control) | **supported** | 2 supported |" in text
  assert ("| (ii) | Hybrid (any control) < Uniform (sequence-independent) | **supported** "
          "| 2 supported |") in text
  assert ("| (iii) | Uniform (sequence-independent) < Uniform (MLP) | **contradicted** "
          "| 1 contradicted |") in text
  assert ("| (iv) | every Hybrid within 10% of Standard's loss (nats) | **supported** "
          "| 2 supported |") in text
  assert ("| (v) | Skip far worse than its Hybrid (≥ 0.5 bpb) | **not decided** "
          "| 1 supported, 1 not decided |") in text
  lines = [l for l in text.splitlines() if l.startswith("| (v) | `random_seq_qk`")]
  assert lines and "+0.487 [" in lines[0] and "not decided" in lines[0]
  # the unknown variant is reported with its intervals but enters no claim
  assert "Rows in no claim (reported only): `brand_new_variant`." in text
  rows = [l for l in text.splitlines() if l.startswith("| `brand_new_variant` | —")]
  assert rows and "2.900 [" in rows[0]
  # paired table: seed-paired and window-paired differences of the Hybrid column
  delta = [l for l in text.splitlines() if l.startswith("| `mlp_control` | +0.300")]
  assert delta, text
  cells = delta[0].split(" | ")
  assert cells[3] == "+0.100 [+0.100, +0.100] (n=3)"
  assert cells[4] == "+0.100 ± 0.000 [+0.100, +0.100]"  # both runs' windows: same PATTERN
  skip = cells[6].split(" ± ")  # Skip windows flat, Hybrid windows PATTERN: se by hand
  se = math.sqrt(0.1 / 3) / 2 / math.sqrt(3)
  assert skip[1] == f"{se:.3f} [{1.9 - paired.t975(9) * se:+.3f}, {1.9 + paired.t975(9) * se:+.3f}]"


def test_claims_missing_rows_say_so(tmp_path):
  root = str(tmp_path)
  for seed in (0, 1):
    write_lm_run(root, "standard", "uniform", seed, 3.0 + 0.01 * seed)
    write_lm_run(root, "static_embedding_qk", "uniform", seed, 3.5 + 0.01 * seed)
  text, _ = report.build_report(root)
  assert "**not decided** (Hybrid runs missing)" in text
  assert "missing: no Uniform run of the MLP family" in text


def test_family_table_is_extensible(monkeypatch):
  assert claims.family({"attention.name": "standard", "model.cb_position": "none"}) == \
      "standard"
  assert claims.family({"attention.name": "standard", "model.cb_position": "mlp_out"}) is None
  assert claims.family({"attention.name": "uniform_broadcast",
                        "attention.options.softmax_heads": False}) == "sequence_independent"
  assert claims.family({"attention.name": "uniform_broadcast"}) is None
  assert claims.family({"attention.name": "shiny"}) is None
  monkeypatch.setattr(claims, "FAMILIES", claims.FAMILIES + (("shiny", {}, "mlp"),))
  assert claims.family({"attention.name": "shiny"}) == "mlp"


def test_l2_intervals(tmp_path):
  root = str(tmp_path)
  for name, base in (("standard", 3.0), ("random_seq_qk", 3.4)):
    for seed in (0, 1, 2):
      config = lm_config(name, "uniform", seed)
      write_run(root, f"{name}-{seed}", config,
                {"bpb": base + 0.01 * seed, "loss": 2.0, "bpb@ctx=8": base + 0.1 + 0.01 * seed})
  text, _ = report.build_report(root)
  assert "### Table L2 with 95% intervals" in text
  h = 4.302653 * 0.01 / math.sqrt(3)
  lines = [l for l in text.splitlines() if l.startswith("| `random_seq_qk` |")]
  assert f"3.510 [{3.51 - h:.3f}, {3.51 + h:.3f}] (n=3)" in lines[-2]
  assert lines[-1].split(" | ")[1] == "+0.400 [+0.400, +0.400] (n=3)"
  assert table_lines(text)


def test_paired_difference_plot_draws_the_tables_intervals(tmp_path, monkeypatch):
  """Plot L-P5 (lm_paired_differences.png) shows each row's seed-paired interval and names its
  paired seed counts; a one-seed row is an open marker without a bar."""
  from attnlab.train.report import paired_plot
  from attnlab.train.report import plots as plotting
  saved = {}

  def keep(fig, directory, name):
    saved[name] = fig
    return name
  monkeypatch.setattr(plotting, "save", keep)
  root = str(tmp_path)
  _sweep(root)
  write_lm_run(root, "fixed_text_qk", "hybrid", 0, 2.9)  # one seed: no interval
  _, plots = report.build_report(root)
  assert paired_plot.NAME in plots
  uniform_ax, hybrid_ax = saved[paired_plot.NAME].axes
  labels = [t.get_text() for t in uniform_ax.get_yticklabels()]
  assert "random_seq_qk (n = 3 / 3)" in labels and "brand_new_variant (n = 3)" in labels
  assert "fixed_text_qk (n = 1)" in labels
  # mlp_control Hybrid − standard is +0.100 on every seed: a zero-width bar at 0.1
  bars = [tuple(l.get_xdata()) for l in hybrid_ax.lines if len(l.get_xdata()) == 2
          and l.get_linewidth() == 3]
  assert any(a == pytest.approx(0.1) and b == pytest.approx(0.1) for a, b in bars), bars
  # the one-seed row: an open marker at its difference (2.9 − 3.0), no thick bar there
  markers = [l for l in hybrid_ax.lines if len(l.get_xdata()) == 1]
  opened = [l for l in markers if l.get_markerfacecolor() == "white"]
  assert [float(l.get_xdata()[0]) for l in opened] == [pytest.approx(-0.1)]
  for fig in saved.values():
    plotting.pyplot().close(fig)
