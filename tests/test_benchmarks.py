"""experiments/benchmarks: the scripts' shared start (render a result file, refuse GPU settings
off a GPU) and the environment record every result file carries."""

import os

import jax
import pytest

from attnlab.train import config_loading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "experiments", "benchmarks")


def load(name):
  return config_loading.load_module(os.path.join(BENCH, f"{name}.py"))


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the refusal off a GPU")
@pytest.mark.parametrize("name", ["bench_attention", "bench_train_step"])
def test_gpu_settings_are_refused_off_a_gpu(name, tmp_path, capsys):
  assert load(name).main(["--device", "gpu", "--out", str(tmp_path / "x.json")]) == 2
  assert "--force" in capsys.readouterr().err
  assert not (tmp_path / "x.json").exists()


def test_train_step_renders_its_committed_result(capsys):
  bench = load("bench_train_step")
  path = os.path.join(BENCH, "results", "train_step_cpu.json")
  if not os.path.exists(path):
    pytest.fail(f"{path} missing: the committed CPU result of bench_train_step.py")
  assert bench.main(["--render", path, "--out", "unused"]) == 0
  assert "| size (d / layers / heads" in capsys.readouterr().out


def test_environment_names_the_machine():
  env = load("bench_attention").environment()
  assert env["backend"] == jax.default_backend() and env["cpu_count"] == os.cpu_count()
  assert {"cpu_model", "jax", "python", "date", "loadavg_start"} <= set(env)


def test_an_appended_measurement_replaces_the_skipped_row_of_its_cell():
  """run_gpu_suite.sh --part2 appends to a result file whose first run skipped rows at its
  deadline: the table shows the new measurement and counts only cells still skipped."""
  bench = load("bench_attention")
  cell = {"section": "kernels", "case": "pallas.mha", "L": 4096, "causal": True}
  rows = [dict(cell, mode="fwd", error="skipped: deadline"),
          dict(cell, mode="fwdbwd", error="skipped: deadline"),
          dict(cell, L=16384, mode="fwd", error="skipped: deadline"),
          dict(cell, mode="fwd", temp_mib=12.0, ms=0.42),
          dict(cell, mode="fwdbwd", temp_mib=30.0, ms=1.40)]
  text = bench.render({"meta": {}, "rows": rows})
  assert "| pallas.mha | yes | 12.0 / 30.0 | - |" in text
  assert "| pallas.mha | yes | 0.42 / 1.40 | - |" in text
  assert "- 1 rows skipped at the deadline" in text
