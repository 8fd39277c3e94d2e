"""Reliability: kill and resume, preemption, multi-process, another mesh, divergence, bad input.

Each test runs real `attnlab train` processes (subprocesses), as a researcher's sweep would.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from attnlab.train.metrics import read_jsonl

ICL = ["--config", "icl_regression:heads=2,runlocal", "--config.log_every=5",
       "--config.eval_every=1000", "--config.eval.prompts=300"]


def env(**extra):
  e = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
  e.update({k: str(v) for k, v in extra.items()})
  return e


def train_cmd(workdir, *args):
  return [sys.executable, "-m", "attnlab.train.cli", "train", *args, "--workdir", str(workdir)]


def run(workdir, *args, timeout=600, **kw):
  return subprocess.run(train_cmd(workdir, *args), capture_output=True, text=True,
                        timeout=timeout, env=env(**kw))


def rows_without_time(workdir):
  return [{k: v for k, v in r.items() if k != "time_s"}
          for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


def final_params(workdir):
  """The parameters of the newest checkpoint, as numpy arrays keyed by path."""
  import orbax.checkpoint as ocp
  ckpt = os.path.join(workdir, "checkpoints")
  step = max(int(s) for s in os.listdir(ckpt) if s.isdigit())
  with ocp.CheckpointManager(ckpt, options=ocp.CheckpointManagerOptions(read_only=True)) as m:
    state = m.restore(step, args=ocp.args.StandardRestore())
  import jax
  flat = jax.tree_util.tree_flatten_with_path(state["params"])[0]
  return step, {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def wait_for(predicate, proc, timeout=300):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if predicate():
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.2)
  return False


def has_checkpoint(workdir, step):
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


@pytest.mark.slow
def test_sigkill_and_restart_is_bit_identical(tmp_path):
  # Long enough that the kill lands mid-run even on a fast, idle machine.
  args = ICL + ["--config.steps=600", "--config.checkpoint.every=20"]
  ref = run(tmp_path / "ref", *args)
  assert ref.returncode == 0, ref.stderr[-2000:]
  work = tmp_path / "killed"
  proc = subprocess.Popen(train_cmd(work, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env())
  assert wait_for(lambda: has_checkpoint(work, 20), proc), "no checkpoint before the kill"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  again = run(work, *args)
  assert again.returncode == 0, again.stderr[-2000:]
  assert rows_without_time(work) == rows_without_time(tmp_path / "ref")
  step_a, a = final_params(tmp_path / "ref")
  step_b, b = final_params(work)
  assert step_a == step_b == 600 and a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow
def test_sigterm_saves_and_restart_continues(tmp_path):
  args = ICL + ["--config.steps=5000", "--config.checkpoint.every=10000"]
  proc = subprocess.Popen(train_cmd(tmp_path, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env(), text=True)
  assert wait_for(lambda: any(r.get("step", 0) >= 10 for r in
                              read_jsonl(str(tmp_path / "metrics.jsonl"))), proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert "preempted" in out
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert len(saved) == 1 and 10 <= saved[0] < 5000
  again = run(tmp_path, *args)
  assert again.returncode == 0, again.stderr[-2000:]
  assert f"from step {saved[0]}" in again.stdout
  assert read_jsonl(str(tmp_path / "metrics.jsonl"))[-1]["final"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  args = ICL + ["--config.steps=50", "--config.checkpoint.every=1", "--config.log_every=1",
                "--config.optimizer.lr=1e30", "--config.checkpoint.async_save=False"]
  res = run(tmp_path, *args)
  assert res.returncode == 1
  msg = res.stderr.strip().splitlines()[-1]
  assert "non-finite at step" in msg, res.stderr[-2000:]
  bad_step = int(msg.split("non-finite at step ")[1].split(";")[0])
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps and max(steps) < bad_step
  step, params = final_params(tmp_path)
  assert step == max(steps)
  assert all(np.all(np.isfinite(v)) for v in params.values())
  assert read_jsonl(str(tmp_path / "metrics.jsonl"))[-1]["diverged"] is True


@pytest.mark.parametrize("args, message", [
    (["--config", "lm:runlocal", "--config.data.corpus=files",
      "--config.data.data_files=('/no/such/file.txt',)"], "/no/such/file.txt"),
    (["--config", "lm:runlocal", "--config.data.corpus=wikitext2"], "wikitext"),
    (["--config", "lm:runlocal", "--config.model.num_heads=3"], "divisible"),
    (["--config", "lm:runlocal", "--config.data.seq_len=1000"], "max_len"),
    (["--config", "icl_regression:runlocal", "--config.batch_size=0"], "batch_size"),
])
def test_bad_input_is_one_clear_line_with_exit_2(tmp_path, args, message):
  res = run(tmp_path / "w", *args, timeout=300)
  err = res.stderr.strip().splitlines()
  assert res.returncode == 2, res.stderr[-2000:]
  assert len(err) == 1 and message in err[0], res.stderr[-2000:]
  assert not (tmp_path / "w").exists()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
  args = ICL + ["--config.steps=20", "--config.checkpoint.every=20", "--config.log_every=5",
                "--config.eval_every=20"]
  single = run(tmp_path / "one", *args)
  assert single.returncode == 0, single.stderr[-2000:]
  port = _free_port()
  procs = [subprocess.Popen(train_cmd(tmp_path / "two", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=env(ATTNLAB_COORDINATOR=f"127.0.0.1:{port}",
                                    ATTNLAB_NUM_PROCESSES=2, ATTNLAB_PROCESS_ID=i,
                                    JAX_PLATFORMS="cpu"))
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  printed = [[l for l in out.splitlines() if l.strip() and not l.startswith("[Gloo]")]
             for out, _ in outs]
  assert printed[0] and not printed[1]  # only process 0 logs
  one = {r["step"]: r["loss"] for r in read_jsonl(str(tmp_path / "one/metrics.jsonl"))
         if r["split"] == "train"}
  two = {r["step"]: r["loss"] for r in read_jsonl(str(tmp_path / "two/metrics.jsonl"))
         if r["split"] == "train"}
  assert one.keys() == two.keys()
  for k in one:
    assert abs(one[k] - two[k]) < 1e-5


MESH_SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[2]
import jax, numpy as np
from attnlab.train import config_loading, settings, loop, checkpointing
mesh = {"8": ("4", "2"), "4": ("2", "2"), "1": ("1", "1")}[sys.argv[2]]
cd = config_loading.get_config("lm:runlocal", {"mesh.data": mesh[0], "mesh.model": mesh[1],
                               "batch_size": "8", "checkpoint.async_save": "False"})
run = settings.from_config(cd)
t = loop.Trainer(run, sys.argv[1])
mngr = checkpointing.manager(sys.argv[1], run.checkpoint)
if sys.argv[3] == "save":
  state, rest = t.init()
  state, _ = t.step(state, rest, 0)
  checkpointing.save(mngr, 1, state, force=True)
  mngr.wait_until_finished()
else:
  state = checkpointing.restore(mngr, 1, t.abstract_state)
  _, rest = t.init()
  ndev = {len(x.sharding.device_set) for x in jax.tree.leaves(state["params"])}
  assert max(ndev) <= int(sys.argv[2]), ndev
  state, metrics = t.step(state, rest, 1)
  assert np.isfinite(float(metrics["loss"]))
  state = checkpointing.restore(mngr, 1, t.abstract_state)
leaves = [np.asarray(x) for x in jax.tree.leaves(state["params"])]
np.savez(sys.argv[1] + "/params_" + sys.argv[2] + ".npz", *leaves)
"""


@pytest.mark.slow
def test_checkpoint_restores_onto_another_mesh(tmp_path):
  for devices, mode in (("8", "save"), ("4", "restore"), ("1", "restore")):
    res = subprocess.run([sys.executable, "-c", MESH_SCRIPT, str(tmp_path), devices, mode],
                         capture_output=True, text=True, timeout=600, env=env())
    assert res.returncode == 0, res.stderr[-3000:]
  ref = np.load(tmp_path / "params_8.npz")
  for devices in ("4", "1"):
    got = np.load(tmp_path / f"params_{devices}.npz")
    for key in ref.files:
      np.testing.assert_array_equal(ref[key], got[key])
