"""experiments/collect.py: finished runs' records out of a workdir and back, checkpoints left."""

import json
import os

from attnlab.train import config_loading, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_run(root, name, final):
  path = root / name
  (path / "checkpoints" / "500").mkdir(parents=True)
  (path / "checkpoints" / "500" / "state").write_text("x")
  (path / "config.json").write_text(json.dumps({"config": {"seed": 0}}))
  rows = [{"step": 1, "loss": 2.0}] + ([{"step": 2, "loss": 1.0, "final": True}] if final else [])
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (path / "diagnostics.json").write_text("{}")
  (path / "plot.png").write_bytes(b"png")
  (path / "log.txt").write_text("log")
  return path


def test_collect_copies_finished_records_only_and_restore_makes_them_done(tmp_path):
  collect = config_loading.load_module(os.path.join(ROOT, "experiments", "collect.py"))
  runs, results, fresh = tmp_path / "runs", tmp_path / "results", tmp_path / "fresh"
  done = make_run(runs, "a=1", final=True)
  make_run(runs, "a=2", final=False)
  assert collect.copy_runs(str(runs), str(results)) == ["a=1"]
  assert sorted(os.listdir(results)) == ["a=1"]
  assert sorted(os.listdir(results / "a=1")) == ["config.json", "diagnostics.json",
                                                 "metrics.jsonl", "plot.png"]
  assert collect.copy_runs(str(runs), str(results)) == []  # identical: nothing to do
  (done / "ood.json").write_text("{}")
  assert collect.copy_runs(str(runs), str(results)) == ["a=1"]
  assert collect.main(["restore", str(results), str(fresh)]) == 0
  assert sweep.is_done(str(fresh / "a=1")) and not (fresh / "a=1" / "checkpoints").exists()
