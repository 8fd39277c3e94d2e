"""``attnlab report`` sections of the three claim studies (experiments/mqar/README.md §2,
experiments/match_to_sample/README.md §2, experiments/afa_spiral/README.md §2) on synthetic run
directories, and the 95% t-interval."""

import json
import math

import pytest
from scipy import stats

from attnlab.train.report import build_report
from attnlab.train.report.tables import ci_cell, t_interval


def _run(path, config, final, task=None, files=None):
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"config": config, "task": task or {}}))
  row = dict(step=10, split="test", final=True, time_s=1.0, **final)
  (path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
  for name, content in (files or {}).items():
    (path / f"{name}.json").write_text(json.dumps(content))


def test_t_interval():
  mean, half = t_interval([1.0, 2.0, 3.0])
  assert mean == 2.0 and half == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
  assert math.isnan(t_interval([1.0])[1])
  assert ci_cell([0.5]) == "0.500 (n=1)"


def test_mqar_table_and_plot(tmp_path):
  for name in ("standard", "relational"):
    for pairs in (4, 8):
      for seed in (0, 1):
        cfg = {"task": "mqar", "seed": seed, "attention": {"name": name},
               "model": {"d_model": 64}, "data": {"pairs": pairs}, "batch_size": 256 // pairs}
        _run(tmp_path / f"{name}{pairs}{seed}", cfg, {"accuracy": 0.9 + 0.01 * seed})
  text, plots = build_report(str(tmp_path))
  assert "| `standard` | 64 | 0.905 ± " in text and "(n=2) |" in text
  assert plots == ["mqar_accuracy_vs_pairs.png"] and (tmp_path / plots[0]).exists()
  assert "Curriculum" not in text


def test_mqar_report_names_the_curriculum_and_keeps_its_rows_apart(tmp_path):
  for start in (0, 500):
    cfg = {"task": "mqar", "seed": 0, "attention": {"name": "standard"}, "steps": 1000,
           "model": {"d_model": 64}, "batch_size": 16,
           "data": {"pairs": 16, "start_pairs": 4 if start else 0, "start_steps": start}}
    _run(tmp_path / f"s{start}", cfg, {"accuracy": 1.0 if start else 0.1})
  text, _ = build_report(str(tmp_path))
  assert "labelled start_steps > 0): the first 500 steps on 4 pairs, then P pairs." in text
  assert "(start_pairs=4, start_steps=500) | 64 | 1.000 (n=1) |" in text
  assert "(start_pairs=0, start_steps=0) | 64 | 0.100 (n=1) |" in text


def test_match_to_sample_table_and_plot(tmp_path):
  for name, params in (("relational", 1000), ("standard", 998)):
    for n in (250, 500):
      cfg = {"task": "match_to_sample", "seed": 0, "attention": {"name": name},
             "data": {"train_size": n}}
      _run(tmp_path / f"{name}{n}", cfg, {"accuracy": 0.75}, task={"parameters": params})
  text, plots = build_report(str(tmp_path))
  assert "| `relational` | 1,000 | 0.750 (n=1) |" in text and "998" in text
  assert plots == ["match_to_sample_accuracy.png"]


def test_afa_spiral_table_dynamics_and_paths(tmp_path):
  path = {"clean": [[1, 0], [0, 1]], "noisy": [[1.1, 0], [0, 0.9]], "pred": [[0.1, 1]]}
  for name in ("adaptive_filter", "standard"):
    final = {"mse_clean": 1.0, "mse_clean_last": 0.5, "mse_noisy": 5.0, "noise_var": 4.0,
             "kalman_mse": 0.2, "kalman_mse_last": 0.03}
    if name == "adaptive_filter":
      final.update(afa_decay_h0=0.12, afa_freq_near1_h0=0.99)
    _run(tmp_path / name, {"task": "afa_spiral", "seed": 0, "attention": {"name": name}},
         final, files={"paths": path})
  text, plots = build_report(str(tmp_path))
  assert "*Kalman filter (true model)* | *0.200* | *0.030*" in text
  assert "decay [0.120]; frequency nearest 1: [0.990]" in text
  assert plots == ["afa_spiral_paths.png"]
