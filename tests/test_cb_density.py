"""experiments/cb_density/compare.py on synthetic run directories with known entropies."""

import json
import os

from attnlab.train import config_loading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(root, name, seed, entropies, bpb, cb="none", attention="standard"):
  path = os.path.join(root, name)
  os.makedirs(path)
  attn = {"name": attention, "layout": "uniform", "options": {"softmax_heads": True}}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"config": {"seed": seed, "attention": attn, "model": {"cb_position": cb}}}, f)
  with open(os.path.join(path, "diagnostics.json"), "w") as f:
    json.dump({"layers": [{"mean": {"entropy": e}} for e in entropies]}, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 1, "split": "eval", "bpb": bpb, "final": True}) + "\n")


def test_table_pairs_seeds_and_reports_lower_entropy_with_cb(tmp_path):
  compare = config_loading.load_module(os.path.join(ROOT, "experiments", "cb_density",
                                                    "compare.py"))
  write_run(tmp_path, "s0", 0, [0.6, 0.8], 2.0)
  write_run(tmp_path, "s1", 1, [0.7, 0.9], 2.1)
  write_run(tmp_path, "c0", 0, [0.5, 0.6], 2.0, cb="mlp_out")
  write_run(tmp_path, "c1", 1, [0.5, 0.8], 2.0, cb="mlp_out")
  data = compare.load(str(tmp_path))
  assert data["standard"][1]["entropy"] == [0.7, 0.9]
  assert data["uniform_broadcast"] == {}
  table = compare.markdown(data)
  cb_row = [line for line in table.splitlines() if line.startswith("| standard + CB")][0]
  # paired Δ of the layer means: seed 0: 0.55 - 0.7 = -0.15; seed 1: 0.65 - 0.8 = -0.15
  assert "-0.150 [-0.150, -0.150] (n=2)" in cb_row
  assert "no runs with diagnostics" in table
  compare.main([str(tmp_path), "--out", str(tmp_path / "out")])
  assert os.path.exists(tmp_path / "out" / "cb_entropy.png")
