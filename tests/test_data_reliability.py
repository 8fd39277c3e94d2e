"""Data reliability (issue #17): how an LM corpus is chosen, local bytes in any encoding,
hub loading without remote code or unchecked downloads, and a sweep report with a corrupt run.

Every case runs the code path the CLI runs (``cli.main`` / ``cli.load_settings`` / the LM task)
and checks the behaviour a user sees: a one-line error (exit 2) naming the field or file, or
the bytes of the file. No network: the hub calls are mocked.
"""

import json
import os

import pytest

from attnlab.train import cli, data_lm, report
from attnlab.train.config_loading import ConfigError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _settings(**overrides):
  return cli.load_settings("lm:runlocal", {f"data.{k}": v for k, v in overrides.items()})


def _cli_error(capsys, argv) -> str:
  """Run the CLI; it must exit 2 with one line on stderr (returned)."""
  assert cli.main(argv) == cli.EXIT_CONFIG_ERROR
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and err.startswith("error: "), err
  return err


def _text_file(path, size=4000):
  path.write_bytes((b"abcdefghij klmnopqrst\n" * (size // 22 + 1))[:size])
  return path


# -- 1. one way to choose a corpus ---------------------------------------------------------


def test_missing_data_file_is_a_one_line_error_before_training(capsys, tmp_path):
  workdir = tmp_path / "w"
  err = _cli_error(capsys, ["train", "--config", "lm:runlocal",
                            "--config.data.data_files=('/no/such/file.txt',)",
                            "--config.steps=20", "--workdir", str(workdir)])
  assert "/no/such/file.txt" in err and "not found" in err
  assert not workdir.exists()  # nothing written, nothing trained


def test_data_files_with_the_default_config_trains_on_the_file(tmp_path):
  path = _text_file(tmp_path / "corpus.txt")
  run = _settings(data_files=f"('{path}',)")
  from attnlab.train.tasks.lm import Task
  task = Task(run, str(tmp_path / "w"))
  assert bytes(task.corpus.train) + bytes(task.corpus.val) == path.read_bytes()
  assert task.describe()["corpus"] != "pydoc"


def test_plain_string_path_is_accepted(tmp_path):
  path = _text_file(tmp_path / "corpus.txt")
  run = _settings(data_files=str(path))
  assert run.task_settings.data_files == (str(path),)


def test_corpus_name_and_data_files_conflict_names_both_fields(capsys, tmp_path):
  path = _text_file(tmp_path / "corpus.txt")
  err = _cli_error(capsys, ["train", "--config", "lm:runlocal", "--config.data.corpus=zen",
                            f"--config.data.data_files={path}", "--workdir", str(tmp_path / "w")])
  assert "data.corpus" in err and "data.data_files" in err
  with pytest.raises(ConfigError, match="data.corpus"):
    cli.load_settings("lm:runlocal,corpus=pydoc", {"data.data_files": str(path)})


def test_default_corpus_without_files_is_pydoc():
  run = _settings()
  corpus = data_lm.load_corpus(run.task_settings.corpus)
  assert corpus.name == "pydoc"
  assert bytes(corpus.train) + bytes(corpus.val) == data_lm.pydoc_bytes()


def test_library_rejects_a_corpus_name_with_data_files(tmp_path):
  path = _text_file(tmp_path / "corpus.txt")
  with pytest.raises(data_lm.DataError, match="zen"):
    data_lm.load_corpus("zen", data_files=[str(path)])


# -- 2. bytes in any encoding, no global cache, too-small files ---------------------------


@pytest.mark.parametrize("payload", [
    "café, naïve, Straße\n".encode("latin-1") * 300,  # not UTF-8
    bytes(range(256)) * 20,  # binary
], ids=["latin1", "binary"])
def test_local_file_is_read_as_bytes(tmp_path, payload):
  path = tmp_path / "corpus.bin"
  path.write_bytes(payload)
  corpus = data_lm.load_corpus("files", data_files=[str(path)])
  assert bytes(corpus.train) + bytes(corpus.val) == payload
  run = _settings(data_files=str(path))
  from attnlab.train.tasks.lm import Task
  assert bytes(Task(run, str(tmp_path / "w")).corpus.train) == payload[:int(0.9 * len(payload))]


@pytest.mark.parametrize("size", [0, 12])
def test_too_small_file_names_the_file_and_the_minimum(capsys, tmp_path, size):
  path = tmp_path / f"small{size}.txt"
  path.write_bytes(b"x" * size)
  err = _cli_error(capsys, ["train", "--config", "lm:runlocal", f"--config.data.data_files={path}",
                            "--workdir", str(tmp_path / "w")])
  assert str(path) in err and "bytes" in err
  minimum = data_lm.min_corpus_bytes(64)  # runlocal: seq_len 64
  assert str(minimum) in err
  with pytest.raises(data_lm.DataError, match=f"small{size}.txt"):  # the library says so too
    data_lm.load_corpus("files", data_files=[str(path)], seq_len=64)


def test_local_files_never_touch_the_global_datasets_cache(tmp_path, monkeypatch):
  import datasets
  global_cache = tmp_path / "global_hf_cache"
  monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", global_cache)
  monkeypatch.setenv("HF_DATASETS_CACHE", str(global_cache))
  text = _text_file(tmp_path / "corpus.txt")
  run = _settings(data_files=str(text))
  from attnlab.train.tasks.lm import Task
  Task(run, str(tmp_path / "w"))
  # Tabular files go through the real `datasets` loader, with the cache in the workdir.
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"text": ["alpha " * 100, "beta " * 100]}), tmp_path / "t.parquet")
  corpus = data_lm.load_corpus("files", data_files=[str(tmp_path / "t.parquet")],
                               cache_dir=tmp_path / "w2" / "data")
  assert bytes(corpus.train).startswith(b"alpha")
  assert not global_cache.exists() or not any(global_cache.iterdir())


# -- 3. hub: no remote code unless asked, no unchecked download ----------------------------


class FakeHub:
  def __init__(self):
    self.calls = []

  def __call__(self, path, name=None, **kwargs):
    self.calls.append(kwargs)
    raise RuntimeError(f"Dataset scripts are no longer supported, but found {path}.py")


def test_no_remote_code_without_the_flag(monkeypatch):
  import datasets
  hub = FakeHub()
  monkeypatch.setattr(datasets, "load_dataset", hub)
  monkeypatch.setattr(data_lm.hub, "_datasets_major", lambda: 3)  # old datasets ran scripts
  with pytest.raises(data_lm.DataError) as info:
    data_lm.load_corpus("tiny_shakespeare")
  assert all(not call.get("trust_remote_code") for call in hub.calls)
  msg = str(info.value)
  assert "trust_remote_code" in msg and "\n" not in msg
  hub.calls.clear()
  with pytest.raises(data_lm.DataError):
    data_lm.load_corpus("tiny_shakespeare:trust_remote_code=true")
  assert hub.calls[0].get("trust_remote_code") is True


def test_no_advice_to_downgrade_and_no_unchecked_download(monkeypatch):
  import urllib.request

  import datasets
  monkeypatch.setattr(datasets, "load_dataset", FakeHub())

  def no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")
  monkeypatch.setattr(urllib.request, "urlopen", no_download)
  monkeypatch.setattr(datasets.DownloadManager, "download_and_extract", no_download)
  monkeypatch.setattr(datasets.DownloadManager, "download", no_download)
  for key in ("enwik8", "tiny_shakespeare"):
    with pytest.raises(data_lm.DataError) as info:
      data_lm.load_hub(key)
    msg = str(info.value).lower()
    assert "datasets<4" not in msg and "downgrade" not in msg and "pip install" not in msg
    assert "data_files" in msg  # what to do instead


# -- 4. a corrupt config.json does not sink the sweep's report ----------------------------


def _fake_run(path, seed, text=None):
  os.makedirs(path)
  config = {"task": "icl_regression", "seed": seed, "attention": {"name": "standard"},
            "model": {"num_heads": 2}}
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(text if text is not None else json.dumps({"config": config, "device": "cpu"}))
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 10, "split": "test", "final": True, "time_s": 1.0,
                        "mse@L=10": 0.5 + seed}) + "\n")


def test_corrupt_config_json_is_skipped_with_a_warning(tmp_path, capsys):
  _fake_run(tmp_path / "seed=0", 0)
  _fake_run(tmp_path / "seed=1", 1)
  _fake_run(tmp_path / "seed=2", 2, text='{"config": {"task": "icl_reg')  # truncated write
  text, _ = report.build_report(str(tmp_path))
  assert "MSE@L=10" in text and "(n=2)" in text
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "seed=2" in err and "config.json" in err
