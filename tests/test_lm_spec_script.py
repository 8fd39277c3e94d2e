"""experiments/lm_ablation/run_l1_gpu.sh: refuses to train the spec-size table without an
accelerator, and its --smoke form runs sweep, diagnostics and report end to end."""

import json
import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
SCRIPT = os.path.join(ROOT, "experiments", "lm_ablation", "run_l1_gpu.sh")
ENV = dict(os.environ, PYTHON=sys.executable)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the refusal is for CPU-only machines")
def test_refuses_to_start_without_an_accelerator(tmp_path):
  res = subprocess.run(["bash", SCRIPT, str(tmp_path / "w")], capture_output=True, text=True,
                       timeout=300, env=ENV)
  assert res.returncode == 1
  assert "no accelerator: pass --smoke" in res.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.slow  # about 5 minutes on 2 busy CPU cores (2026-12-03)
def test_smoke_runs_sweep_diagnostics_and_report(tmp_path):
  work = tmp_path / "w"
  res = subprocess.run(["bash", SCRIPT, str(work), "--smoke"], capture_output=True, text=True,
                       timeout=1200, env=ENV)
  assert res.returncode == 0, res.stderr[-3000:]
  runs = sorted(p for p in work.iterdir() if p.is_dir())
  assert [p.name for p in runs] == ["attention=standard,layout=uniform,seed=0",
                                    "attention=standard,layout=uniform,seed=0,"
                                    "model.cb_position=mlp_out"]
  for run in runs:
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["model"]["num_layers"] == 6 and config["data"]["corpus"] == "stdlib_src"
    assert config["eval"]["skip_layers"] == [0, 2, 4]
    assert (run / "diagnostics.json").exists() and (run / "window_bpb.json").exists()
  assert "Table L1" in (work / "report.md").read_text()
