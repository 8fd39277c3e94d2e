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
  assert proc.returncode == 75, err[-2000:]  # EX_TEMPFAIL: preempted, resumable
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
    # issue #17 case 6: an unknown preset and a negative learning rate.
    (["--config", "icl_regression:preset=huge"], "unknown preset 'huge'; choose one of "
     "['ablation', 'default', 'paper', 'smoke']"),
    (["--config", "lm:runlocal", "--config.optimizer.lr=-0.01"], "config.optimizer.lr must be"),
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


# -- issue #17: stale sweeps, unrecoverable runs, two writers, one-line errors ----------------
#
# Most of these run `attnlab train` in-process through `cli.main` on a tiny LM (a few seconds);
# the lock, preemption and launcher tests use real processes, as the issue describes.

import errno
import shutil

from attnlab.train import checkpointing, cli, loop, sweep
from attnlab.train import workdir as workdir_lib

LM = ["--config", "lm:runlocal", "--config.steps=4", "--config.checkpoint.every=2",
      "--config.log_every=2", "--config.eval_every=1000", "--config.eval.windows=2",
      "--config.checkpoint.async_save=False", "--config.model.num_layers=1"]


def cli_train(capsys, workdir, *extra):
  """``attnlab train`` in-process: (exit status, stdout, stderr lines)."""
  capsys.readouterr()
  code = cli.main(["train", *LM, *extra, "--workdir", str(workdir)])
  out, err = capsys.readouterr()
  return code, out, [l for l in err.splitlines() if l.strip()]


@pytest.fixture(scope="module")
def trained_lm(tmp_path_factory):
  """A finished 4-step LM run with checkpoints at steps 2 and 4 (copied by each test)."""
  workdir = tmp_path_factory.mktemp("lm") / "run"
  assert cli.main(["train", *LM, "--workdir", str(workdir)]) == 0
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  return workdir


def copy_run(src, dst):
  shutil.copytree(src, dst)
  return dst


def _truncate_largest(ckpt):
  files = [os.path.join(d, f) for d, _, fs in os.walk(ckpt) for f in fs]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)


def _empty_metadata(ckpt):
  open(os.path.join(ckpt, "default", "_METADATA"), "w").close()


def _delete_manifest(ckpt):
  os.remove(os.path.join(ckpt, "default", "manifest.ocdbt"))


@pytest.mark.parametrize("damage", [_truncate_largest, _empty_metadata, _delete_manifest])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, trained_lm,
                                                                   damage):
  work = copy_run(trained_lm, tmp_path / "run")
  reference = rows_without_time(work)
  damage(str(work / "checkpoints" / "4"))
  code, out, err = cli_train(capsys, work)
  assert code == 0, err
  warnings = [l for l in err if l.startswith("warning:")]
  assert warnings and "checkpoints/4 is damaged" in warnings[0], err
  assert "from step 2" in out
  # Retrained 2 -> 4 bit-exactly: the same metrics rows, and a fresh checkpoint 4.
  assert rows_without_time(work) == reference
  assert sorted(os.listdir(work / "checkpoints")) == ["2", "4"]
  assert len(os.listdir(work / "checkpoints.bad")) == 1


def test_no_intact_checkpoint_is_one_line_and_exit_1(tmp_path, capsys, trained_lm):
  work = copy_run(trained_lm, tmp_path / "run")
  for step in ("2", "4"):
    _empty_metadata(str(work / "checkpoints" / step))
  code, _, err = cli_train(capsys, work)
  errors = [l for l in err if not l.startswith("warning:")]
  assert code == 1 and len(errors) == 1 and "no intact checkpoint" in errors[0], err
  assert sorted(os.listdir(work / "checkpoints")) == ["2", "4"]  # nothing moved or deleted


def test_partial_metrics_line_is_tolerated_and_repaired(tmp_path, capsys, trained_lm):
  work = copy_run(trained_lm, tmp_path / "run")
  reference = rows_without_time(work)
  with open(work / "metrics.jsonl", "a") as f:
    f.write('{"step": 3, "time_s": 1.0, "spl')  # what a full disk or power loss leaves
  assert rows_without_time(work) == reference  # readers skip the partial last line
  assert sweep.is_done(str(work))
  code, out, err = cli_train(capsys, work, "--config.steps=6")  # extend: the writer repairs
  assert code == 0, err
  lines = (work / "metrics.jsonl").read_text().splitlines()
  assert all(json.loads(line) for line in lines)  # every line is complete JSON again
  assert [r["step"] for r in map(json.loads, lines) if r.get("final")] == [6]
  with open(work / "metrics.jsonl", "a") as f:  # a damaged line in the middle is reported
    f.write("garbage\n" + lines[-1] + "\n")
  code, _, err = cli_train(capsys, work, "--config.steps=8")
  assert code == 1 and len(err) == 1 and "is not JSON" in err[0], err


HOLD_LOCK = """
import sys, time
from attnlab.train import workdir
workdir.WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_second_trainer_on_a_workdir_exits_2_at_once(tmp_path, capsys, trained_lm):
  work = copy_run(trained_lm, tmp_path / "run")
  before = (work / "metrics.jsonl").read_text()
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(work)],
                            stdout=subprocess.PIPE, text=True, env=env())
  try:
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.time()
    code, _, err = cli_train(capsys, work, "--config.steps=6")
    assert code == 2 and len(err) == 1 and "is in use by" in err[0], err
    assert f"pid {holder.pid}" in err[0] and time.time() - t0 < 10
    assert (work / "metrics.jsonl").read_text() == before
  finally:
    holder.kill()
    holder.wait()
  code, _, err = cli_train(capsys, work, "--config.steps=6")  # the lock died with its holder
  assert code == 0, err


def test_preempted_trainer_exits_75_after_saving(tmp_path):
  args = LM + ["--config.steps=100000", "--config.checkpoint.every=100000"]
  proc = subprocess.Popen(train_cmd(tmp_path, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env(), text=True)
  assert wait_for(lambda: any(r.get("step", 0) >= 2 for r in
                              read_jsonl(str(tmp_path / "metrics.jsonl"))), proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == workdir_lib.EXIT_PREEMPTED == 75, err[-2000:]
  assert "preempted" in out
  assert len(os.listdir(tmp_path / "checkpoints")) == 1
  # SIGTERM while the trainer is still starting (it holds the lock, has not trained): also 75.
  lock = tmp_path / workdir_lib.LOCK_NAME
  proc = subprocess.Popen(train_cmd(tmp_path, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env(), text=True)
  assert wait_for(lambda: f"pid {proc.pid}" in lock.read_text(), proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, err[-2000:]


def _enospc(*args, **kwargs):
  raise OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoints/4")


def _tensorstore_enospc(*args, **kwargs):  # how orbax reports it from its writer threads
  raise ValueError('RESOURCE_EXHAUSTED: Error writing "params/0" in OCDBT database at local '
                   'file "/data/run/checkpoints/4.orbax-checkpoint-tmp/d/1a2b": Failed to '
                   "write 1033720 bytes to file 7: No space left on device "
                   "[os_error_code='28']")


@pytest.mark.parametrize("raiser", [_enospc, _tensorstore_enospc])
def test_disk_full_is_one_line_naming_the_file_and_exit_74(tmp_path, capsys, monkeypatch,
                                                            raiser):
  monkeypatch.setattr(checkpointing, "save", raiser)
  code, _, err = cli_train(capsys, tmp_path / "run")
  assert code == workdir_lib.EXIT_IO == 74
  assert len(err) == 1 and "No space left on device" in err[0] and "/data/run/checkpoints/4" \
      in err[0] and "free space" in err[0], err


@pytest.mark.parametrize("where", ["new", "extended"])
def test_read_only_workdir_is_one_line_and_exit_74(tmp_path, capsys, monkeypatch, trained_lm,
                                                   where):
  # Tests run as root, where chmod does not stop writes: the read-only file system is
  # simulated at the first write each case makes (a new run creates its workdir; an extended
  # run rewrites config.json). test_real_full_and_read_only_disks does it for real.
  def erofs(path, *a, **kw):
    raise OSError(errno.EROFS, "Read-only file system", str(path))
  if where == "new":
    work = tmp_path / "run"
    real_makedirs = os.makedirs
    monkeypatch.setattr(os, "makedirs", lambda path, *a, **kw: (
        erofs(path) if str(path).startswith(str(work)) else real_makedirs(path, *a, **kw)))
    extra = ()
  else:
    work = copy_run(trained_lm, tmp_path / "run")
    monkeypatch.setattr(loop.workdir_lib, "write_json_atomic", erofs)
    extra = ("--config.steps=6",)
  code, _, err = cli_train(capsys, work, *extra)
  assert code == 74 and len(err) == 1, err
  assert "Read-only file system" in err[0] and str(work) in err[0], err


def test_sample_rejects_a_negative_temperature(tmp_path, capsys):
  code = cli.main(["sample", "--workdir", str(tmp_path), "--prompt", "x", "--temperature",
                   "-1"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "--temperature must be >= 0" in err[0], err


# A config and a stand-in trainer for the sweep tests: the config is light (no JAX), and the
# stand-in writes the run's resolved config and a final row like `attnlab train` does, so the
# launcher's identity check runs on real config.json files. With --config.sleep it waits, and
# on SIGTERM it exits 75 as a preempted trainer does.
