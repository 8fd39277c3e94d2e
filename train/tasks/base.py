"""The contract between a task and the training loop."""

from __future__ import annotations

from typing import Any, Callable


class Task:
  """What :mod:`attnlab.train.loop` needs from a task; each task module subclasses this.

  ``run`` is the run's :class:`~attnlab.train.settings.RunSettings` (``run.task_settings`` is
  the task's own typed section); ``workdir`` is where a task may cache derived data.
  """

  def __init__(self, run, workdir: str | None = None):
    self.run, self.s = run, run.task_settings
    self.workdir = workdir

  # ``split`` of the final evaluation row in metrics.jsonl and what the summary line calls it.
  final_split = "test"
  final_split_name = "test"

  def describe(self) -> dict:
    """JSON-able facts about the data, written into config.json."""
    raise NotImplementedError

  def build_model(self, rngs) -> Any:
    """The NNX model."""
    raise NotImplementedError

  def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    """This process's rows of the batch of ``step`` (a pure function of the seed and step)."""
    raise NotImplementedError

  def loss(self, model, batch: dict, deterministic: bool):
    """``(scalar loss, metrics dict)`` of ``model`` on ``batch``."""
    raise NotImplementedError

  def evaluate(self, make_model: Callable[[], Any]) -> dict:
    """Evaluation metrics of the model that ``make_model()`` returns."""
    raise NotImplementedError

  def parameter_metrics(self, model) -> dict:
    """Metrics read off the parameters, logged with training rows (default: none)."""
    del model
    return {}

  def reference_metrics(self) -> dict:
    """Closed-form baselines logged with the final row (default: none)."""
    return {}

  def final_files(self) -> dict[str, Any]:
    """JSON-able per-example results of the latest evaluation, written after the final one as
    ``<workdir>/<key>.json`` (default: none). Paired statistics read them."""
    return {}
