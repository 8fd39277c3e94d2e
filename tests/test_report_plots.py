"""Report plots: legends tell every plotted group apart, log axes carry plain decimal ticks,
acceptance bands are not applied to runs shorter than the band assumes."""

import copy
import re

import numpy as np
import pytest

from attnlab.train import report
from attnlab.train.report import plots as plotting

from test_sweep_report import icl_config, icl_final, lm_config, write_run


@pytest.fixture
def figures(monkeypatch):
  """The figures the report saves, by file name (kept open for inspection)."""
  saved = {}

  def keep(fig, directory, name):
    fig.canvas.draw()
    saved[name] = fig
    return name
  monkeypatch.setattr(plotting, "save", keep)
  yield saved
  for fig in saved.values():
    plotting.pyplot().close(fig)


def _lines(ax):
  """(legend text, colour, line style) of each group's line on ``ax``."""
  handles, texts = ax.get_legend_handles_labels()
  return [(t, tuple(h.get_color()) if not isinstance(h.get_color(), str) else h.get_color(),
           h.get_linestyle()) for h, t in zip(handles, texts)]


def _lm_runs(root, corpora=("pydoc", "zen"), steps=300):
  for corpus in corpora:
    for name in ("standard", "relational"):
      for seed in (0, 1):
        config = copy.deepcopy(lm_config(name, "uniform", seed))
        config["data"]["corpus"], config["steps"] = corpus, steps
        rows = [{"step": s, "time_s": s / 10.0, "split": "train", "loss": 3.0 + 0.1 * seed
                 + (0.2 if corpus == "zen" else 0) - s / 1000} for s in (50, 100)]
        rows += [{"step": s, "time_s": s / 10.0, "split": "eval", "bpb": 3.5 - s / 1000}
                 for s in (50, 100)]
        write_run(root, f"{corpus}-{name}-{seed}", config,
                  {"bpb": 3.0 + 0.01 * seed, "skip_bpb": 4.0, "loss": 2.0}, rows)


def test_legends_name_every_varying_field_and_styles_differ(tmp_path, figures):
  """`standard` on pydoc and on zen are two legend entries with two styles, not two
  "standard" lines of one colour."""
  _lm_runs(str(tmp_path))
  report.build_report(str(tmp_path))
  for name in ("lm_val_bpb_vs_step.png", "lm_train_loss.png"):
    for ax in figures[name].axes:
      lines = _lines(ax)
      assert len(lines) == 4, (name, lines)
      texts = [t for t, _, _ in lines]
      assert len(set(texts)) == 4, (name, texts)
      assert all("corpus=" in t for t in texts), (name, texts)
      assert len({(c, ls) for _, c, ls in lines}) == 4, (name, lines)


def test_styles_stay_distinct_past_ten_groups():
  looks = plotting.styles(25)
  assert len({(s["color"], s["linestyle"]) for s in looks}) == 25


def test_log_axes_have_plain_decimal_tick_labels(tmp_path, figures):
  """Training loss between 3.0 and 3.4 on a log axis: ticks "3", "3.2"…, not "3.2×10⁰"."""
  _lm_runs(str(tmp_path), corpora=("pydoc",))
  report.build_report(str(tmp_path))
  ax = figures["lm_train_loss.png"].axes[0]
  shown = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
  assert len(shown) >= 3, f"a log axis under a decade needs several labelled ticks: {shown}"
  assert all(re.fullmatch(r"\d+(\.\d+)?", t) for t in shown), shown


def test_bands_are_not_applied_to_runs_shorter_than_they_assume(tmp_path):
  """A 600-step (runlocal) ICL run and a 4-step LM run: the bands say "not applicable" with the
  step counts, never FAIL."""
  icl = str(tmp_path / "icl")
  for heads in (1, 2):
    write_run(icl, f"h{heads}", dict(icl_config(heads, 0), steps=600), icl_final(0.9))
  text, _ = report.build_report(icl)
  bands = [l for l in text.splitlines() if l.startswith("- H=") and "MSE" in l]
  assert bands and "**FAIL**" not in text, text
  assert all("not applicable (600 steps < 2000 the band assumes)" in l for l in bands), bands
  lm = str(tmp_path / "lm")
  _lm_runs(lm, corpora=("pydoc",), steps=4)
  text, _ = report.build_report(lm)
  checks = [l for l in text.splitlines()
            if l.startswith("- ") and ("unigram" in l or "Hybrid" in l)]
  assert checks and all("not applicable (4 steps < 300 the band assumes)" in l for l in checks), \
      checks
  assert "**FAIL**" not in text


def test_band_shades_the_95_percent_t_interval_of_the_mean():
  """Three seeds 1, 2, 3 at each x: mean 2, half-width t(0.975, 2) * 1 / sqrt(3) = 2.484;
  one seed (NaN elsewhere) draws the line but no shading at that x."""
  plt = plotting.pyplot()
  fig, ax = plt.subplots()
  ys = plotting.ragged_rows([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [5.0]])
  assert ys.shape == (3, 3) and np.isnan(ys[1:, 2]).all()
  line = plotting.band(ax, [0, 1, 2], ys, "run")
  np.testing.assert_allclose(line.get_ydata(), [2.0, 2.0, 5.0])
  (poly,) = ax.collections
  lows = poly.get_paths()[0].vertices[:, 1]
  half = 4.302652729911275 / np.sqrt(3.0)
  np.testing.assert_allclose([lows.min(), lows.max()], [2.0 - half, 2.0 + half], rtol=1e-5)
  plt.close(fig)
