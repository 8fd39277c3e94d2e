"""Reliability of sweeps (issue #17): a rerun compares each run's resolved config, SIGTERM reaches
the trainers, locks are handed from launcher to trainer, one-line I/O errors; and real full and
read-only disks. Shared helpers come from test_reliability."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from attnlab.train import cli, sweep
from attnlab.train.metrics import read_jsonl
from test_reliability import HOLD_LOCK, LM, env, run, wait_for

SWEEP_CONFIG = """
import ml_collections

def get_config(arg=""):
  return ml_collections.ConfigDict(dict(task="fake", steps=2, seed=0, sleep=0.0,
                                        optimizer=dict(lr=0.001), checkpoint=dict(every=1)))

def sweep(add):
  add(seed=0)
  add(seed=1)
"""

FAKE_TRAINER = """
import json, os, signal, sys, time
from attnlab.train import config_loading
args = sys.argv[1:]
workdir = args[args.index("--workdir") + 1]
over = dict(a[len("--config."):].split("=", 1) for a in args if a.startswith("--config."))
cd = config_loading.get_config(args[args.index("--config") + 1], over)
with open(os.path.join(os.path.dirname(workdir), "calls.jsonl"), "a") as f:
  f.write(json.dumps({"run": os.path.basename(workdir), "pid": os.getpid()}) + "\\n")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
time.sleep(cd.sleep)
with open(os.path.join(workdir, "config.json"), "w") as f:
  json.dump({"config": cd.to_dict()}, f)
with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
  f.write(json.dumps({"step": cd.steps, "split": "test", "final": True}) + "\\n")
"""


@pytest.fixture
def fake_sweep(tmp_path, monkeypatch):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(SWEEP_CONFIG)
  trainer = tmp_path / "fake_trainer.py"
  trainer.write_text(FAKE_TRAINER)
  monkeypatch.setattr(sweep, "default_command", lambda: [sys.executable, str(trainer)])
  return str(cfg), tmp_path / "sw"


def sweep_calls(workdir):
  path = os.path.join(workdir, "calls.jsonl")
  return [json.loads(l)["run"] for l in open(path)] if os.path.exists(path) else []


def cli_sweep(capsys, cfg, workdir, *extra):
  capsys.readouterr()
  code = cli.main(["sweep", "--config", cfg, "--workdir", str(workdir), *extra])
  out, err = capsys.readouterr()
  return code, out, err.strip().splitlines()


def test_sweep_rerun_with_another_config_is_refused_extended_or_forced(capsys, fake_sweep):
  cfg, work = fake_sweep
  assert cli_sweep(capsys, cfg, work)[0] == 0
  assert sorted(sweep_calls(work)) == ["seed=0", "seed=1"]
  # Same config: skipped.
  code, out, _ = cli_sweep(capsys, cfg, work)
  assert code == 0 and "2 skipped" in out and len(sweep_calls(work)) == 2
  # A sweep-wide change of the runs' identity: refused with the difference, nothing runs.
  code, out, err = cli_sweep(capsys, cfg, work, "--config.optimizer.lr=0.01")
  assert code == 2 and len(err) == 1, err
  assert "optimizer.lr: 0.001 -> 0.01" in err[0] and "--force" in err[0]
  assert len(sweep_calls(work)) == 2
  # More steps: finished runs are launched again (`attnlab train` extends them).
  code, out, _ = cli_sweep(capsys, cfg, work, "--config.steps=5")
  assert code == 0 and "2 done" in out and len(sweep_calls(work)) == 4
  # --force retrains the runs of the old identity from scratch.
  code, out, _ = cli_sweep(capsys, cfg, work, "--config.steps=5", "--config.optimizer.lr=0.01",
                           "--force")
  assert code == 0 and "2 done" in out and len(sweep_calls(work)) == 6
  finals = read_jsonl(str(work / "seed=0" / "metrics.jsonl"))
  assert len(finals) == 1  # the old run's rows went with it
  assert json.load(open(work / "seed=0" / "config.json"))["config"]["optimizer"]["lr"] == 0.01


SWEEP_SCRIPT = """
import sys
from attnlab.train import cli, sweep
sweep.default_command = lambda: [sys.executable, sys.argv[1]]
sys.exit(cli.main(["sweep", "--config", sys.argv[2], "--workdir", sys.argv[3],
                   "--parallel", "2", "--config.sleep=60"]))
"""


def test_sigterm_to_the_sweep_reaches_its_trainers_and_exits_75(tmp_path, fake_sweep):
  cfg, work = fake_sweep
  trainer = sweep.default_command()[1]
  proc = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, trainer, cfg, str(work)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
  assert wait_for(lambda: len(sweep_calls(work)) == 2, proc, timeout=60)
  pids = [json.loads(l)["pid"] for l in open(work / "calls.jsonl")]
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 75, out + err
  assert "2 preempted" in out and "failed" not in out
  for pid in pids:  # no orphans left training
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)
  assert not any(os.path.exists(work / n / "error.txt") for n in ("seed=0", "seed=1"))


def test_sweep_never_starts_a_run_whose_trainer_outlived_its_launcher(tmp_path, fake_sweep):
  """A launcher killed with SIGKILL leaves its trainer running; it keeps the run's lock, so a
  relaunch leaves that run alone instead of training it twice."""
  cfg, work = fake_sweep
  run_dir = work / "seed=0"
  os.makedirs(run_dir)
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)],
                            stdout=subprocess.PIPE, text=True, env=env())
  try:
    assert holder.stdout.readline().strip() == "locked"
    runs = sweep.expand(cfg)
    results = sweep.run_local(runs, str(work), log=lambda *a: None)
    assert results["seed=0"]["result"] == "busy" and results["seed=1"]["result"] == "done"
    assert sweep_calls(work) == ["seed=1"]
  finally:
    holder.kill()
    holder.wait()


def test_trainer_holds_the_lock_the_launcher_hands_it(tmp_path):
  """The launcher passes its locked descriptor: the trainer holds the lock without a second
  flock (which would fail), and releasing it leaves the launcher's lock in place."""
  run_dir = tmp_path / "run"
  os.makedirs(run_dir)
  launcher = sweep.RunLock(str(run_dir))
  assert launcher.acquire()
  script = ("import os, sys\nfrom attnlab.train import workdir\n"
            "l = workdir.WorkdirLock(sys.argv[1]); l.acquire(); l.release()\n"
            "print(workdir.WorkdirLock(sys.argv[1]).try_acquire())")
  res = subprocess.run([sys.executable, "-c", script, str(run_dir)], capture_output=True,
                       text=True, env=env(ATTNLAB_LOCK_FD=launcher.fd),
                       pass_fds=(launcher.fd,))
  assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr
  launcher.release()


def test_sweep_in_a_read_only_directory_is_one_line_and_exit_74(capsys, fake_sweep,
                                                                 monkeypatch):
  cfg, work = fake_sweep
  real_makedirs = os.makedirs

  def erofs(path, *a, **kw):  # root ignores chmod: the read-only file system is simulated
    if str(path).startswith(str(work)):
      raise OSError(errno.EROFS, "Read-only file system", str(path))
    return real_makedirs(path, *a, **kw)
  monkeypatch.setattr(sweep.os, "makedirs", erofs)
  code, _, err = cli_sweep(capsys, cfg, work)
  assert code == 74 and len(err) == 1 and "Read-only file system" in err[0], err


def _mount_tmpfs(path, options):
  os.makedirs(path, exist_ok=True)
  res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True)
  if res.returncode != 0:
    pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root")
def test_real_full_and_read_only_disks(tmp_path):
  """The cases as a user meets them: a real full disk (a 600 kB tmpfs) and a real read-only
  file system (the same tmpfs remounted read-only), each one line with exit 74."""
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "size=600k")
  try:
    full = run(disk / "run", *LM, "--config.checkpoint.async_save=True", timeout=300)
    err = full.stderr.strip().splitlines()
    assert full.returncode == 74 and len(err) == 1, full.stderr[-3000:]
    assert "No space left on device" in err[0] and str(disk) in err[0]
    shutil.rmtree(disk / "run")
    subprocess.run(["umount", str(disk)], check=True)
    _mount_tmpfs(disk, "size=64m")
    assert run(disk / "run", *LM).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    for workdir, extra in ((disk / "new", ()), (disk / "run", ("--config.steps=6",))):
      res = run(workdir, *LM, *extra, timeout=300)
      err = res.stderr.strip().splitlines()
      assert res.returncode == 74 and len(err) == 1, res.stderr[-3000:]
      assert "Read-only file system" in err[0]
  finally:
    subprocess.run(["umount", str(disk)], capture_output=True)
