"""TensorBoard events of a resumed run: each step once, as TensorBoard reads them."""

import glob
import os
import shutil
import struct

from attnlab.train import config_loading, loop, settings


def _events(path):
  """The Event protos of one TFRecord event file (length, crc, data, crc per record)."""
  from tensorboardX.proto import event_pb2
  out = []
  with open(path, "rb") as f:
    data = f.read()
  i = 0
  while i + 12 <= len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    event = event_pb2.Event()
    event.ParseFromString(data[i + 12:i + 12 + n])
    out.append(event)
    i += 12 + n + 4
  return out


def _scalars_as_tensorboard_shows_them(tb_dir):
  """{(tag, step): [values]} over the event files in write order, applying TensorBoard's purge:
  a SessionLog.START at step s drops the events read so far with step >= s."""
  from tensorboardX.proto import event_pb2
  seen, raw_records = {}, 0
  for path in sorted(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*")),
                     key=os.path.getmtime):
    for e in _events(path):
      if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START:
        seen = {k: v for k, v in seen.items() if k[1] < e.step}
      for v in e.summary.value:
        raw_records += 1
        seen.setdefault((v.tag, e.step), []).append(v.simple_value)
  return seen, raw_records


def test_resumed_run_shows_each_step_once_in_tensorboard(tmp_path):
  overrides = {"steps": "4", "log_every": "1", "eval_every": "100", "checkpoint.every": "2",
               "eval.windows": "2"}
  run = settings.from_config(config_loading.get_config("lm:runlocal", overrides))
  workdir = str(tmp_path / "run")
  loop.train(run, workdir, verbose=False)
  # Killed after logging steps 3-4 but before their checkpoint: resume restores step 2.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  loop.train(run, workdir, verbose=False)
  seen, raw = _scalars_as_tensorboard_shows_them(os.path.join(workdir, "tb"))
  assert raw > len(seen)  # the first attempt's steps 3-4 are still in its file ...
  twice = {k: v for k, v in seen.items() if len(v) > 1}
  assert not twice, f"steps shown twice after the resume: {sorted(twice)[:5]}"  # ... purged
  assert sorted(s for tag, s in seen if tag == "train/loss") == [1, 2, 3, 4]
  # The resumed process wrote nothing at or before the restored step.
  newest = max(glob.glob(os.path.join(workdir, "tb", "events.out.tfevents.*")),
               key=os.path.getmtime)
  assert all(e.step > 2 for e in _events(newest) if e.summary.value)
