"""experiments/lm_ablation/check_memory_efficient.py: restores a trained checkpoint, evaluates
it with both kernels, and writes the table and the JSON that `attnlab report` reads."""

import json
import os
import subprocess
import sys

from attnlab.train.report.tables import SAME_PARAMETER_CHECK, SAME_PARAMETER_TOL

ROOT = os.path.join(os.path.dirname(__file__), "..")
SCRIPT = os.path.join(ROOT, "experiments", "lm_ablation", "check_memory_efficient.py")
SPEC = os.path.join(ROOT, "configs", "lm.py") + ":runlocal,attention={attention},layout={layout}"


def run(*args):
  res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
  assert res.returncode == 0, res.stderr[-3000:]
  return res


def test_same_parameters_give_the_same_bpb_with_both_kernels(tmp_path):
  sweep = tmp_path / "sweep"
  run_dir = sweep / "attention=memory_efficient,layout=uniform,seed=0"
  # Warm-up shortened so that 20 steps move the parameters well away from their initial values:
  # the check must evaluate the trained checkpoint, not a fresh model.
  run("-m", "attnlab.train.cli", "train", "--config", SPEC.format(attention="memory_efficient",
      layout="uniform"), "--workdir", str(run_dir), "--config.steps=20",
      "--config.optimizer.warmup_steps=2")
  (sweep / "attention=standard,layout=uniform,seed=0,model.cb_position=mlp_out").mkdir()
  out = tmp_path / "out" / "check.md"
  # A row from an earlier sitting whose checkpoint is gone: --keep carries it over.
  earlier = {"run": "attention=memory_efficient,layout=hybrid,seed=0", "trained": 3.0,
             "standard": 3.0, "memory_efficient": 3.0000001}
  out.parent.mkdir()
  (out.parent / SAME_PARAMETER_CHECK).write_text(json.dumps({"spec": SPEC, "runs": [earlier]}))
  run(SCRIPT, str(sweep), "--spec", SPEC, "--out", str(out), "--keep")

  rows = json.loads((out.parent / SAME_PARAMETER_CHECK).read_text())["runs"]
  # The CB run (an extra override) is left out; the kept row stays, in name order.
  assert [r["run"] for r in rows] == [earlier["run"], run_dir.name]
  assert rows[0] == earlier and f"`{earlier['run']}` | 3.0000000" in out.read_text()
  row = rows[1]
  assert abs(row["standard"] - row["memory_efficient"]) < SAME_PARAMETER_TOL
  # Restoring the final checkpoint with the kernel it was trained with reproduces its final
  # validation bpb (same windows), so the checkpoint, not a fresh initialisation, was evaluated.
  assert abs(row["memory_efficient"] - row["trained"]) < 1e-5
  assert "equal at the table's printed precision" in out.read_text()


def test_a_folder_without_checkpoints_is_an_error(tmp_path):
  (tmp_path / "attention=standard,layout=uniform,seed=0").mkdir()
  res = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
  assert res.returncode != 0
  assert "no `standard` or `memory_efficient` runs with checkpoints" in res.stderr


def test_keep_refuses_rows_made_with_another_spec(tmp_path):
  out = tmp_path / "check.md"
  (tmp_path / SAME_PARAMETER_CHECK).write_text(json.dumps({"spec": "other.py:x", "runs": []}))
  res = subprocess.run([sys.executable, SCRIPT, str(tmp_path), "--out", str(out), "--keep"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert res.returncode != 0 and "was made with --spec 'other.py:x'" in res.stderr


def test_keep_without_checkpoints_writes_the_kept_rows_again(tmp_path):
  (tmp_path / "attention=standard,layout=uniform,seed=0").mkdir()  # no checkpoints
  out = tmp_path / "check.md"
  kept = {"run": "attention=memory_efficient,layout=uniform,seed=0", "trained": 3.0,
          "standard": 3.0, "memory_efficient": 3.5}
  (tmp_path / SAME_PARAMETER_CHECK).write_text(json.dumps({"spec": SPEC, "runs": [kept]}))
  res = run(SCRIPT, str(tmp_path), "--spec", SPEC, "--out", str(out), "--keep")
  assert "writing the 1 kept rows again" in res.stderr
  assert json.loads((tmp_path / SAME_PARAMETER_CHECK).read_text())["runs"] == [kept]
  # A kept row that disagrees is still reported as such.
  assert "Largest |difference|: 5.0e-01 bpb (NOT equal" in out.read_text()
