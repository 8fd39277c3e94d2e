"""The training loop: sharded init, jitted step with gradient accumulation, checkpoints,
evaluation, metrics, preemption and divergence handling.

Resume order: this workdir's latest checkpoint, then ``checkpoint.init_from``, then scratch.
Batches are pure functions of (seed, step), so resuming needs no iterator state.
"""

from __future__ import annotations

import json
import os
import platform
import signal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attnlab.train import checkpointing, sharding, tasks
from attnlab.train import workdir as workdir_lib
from attnlab.train.config_loading import ConfigError
from attnlab.train.metrics import MetricsWriter, Progress, format_metrics, read_jsonl

# Fields that may change when a run is continued in the same workdir.
RESUMABLE_FIELDS = workdir_lib.RESUMABLE_FIELDS


class Diverged(RuntimeError):
  """The loss became non-finite; the last good checkpoint is kept."""


def make_optimizer(opt, steps: int):
  """optax optimizer and learning-rate schedule from :class:`OptimizerSettings`."""
  warmup = min(opt.warmup_steps, max(steps - 1, 0))
  decay = max(steps, warmup + 1)
  if opt.schedule == "constant":
    schedule = optax.constant_schedule(opt.lr)
  elif opt.schedule == "warmup_constant":
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, opt.lr, max(warmup, 1)), optax.constant_schedule(opt.lr)],
        [max(warmup, 1)])
  elif opt.schedule == "cosine":
    schedule = optax.cosine_decay_schedule(opt.lr, decay, alpha=opt.min_lr_ratio)
  else:
    schedule = optax.warmup_cosine_decay_schedule(0.0, opt.lr, warmup, decay,
                                                  end_value=opt.lr * opt.min_lr_ratio)
  if opt.name == "adamw":
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                       weight_decay=opt.weight_decay)
  elif opt.name == "adam":
    core = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  else:
    core = optax.sgd(schedule)
  chain = [optax.clip_by_global_norm(opt.clip_norm)] if opt.clip_norm > 0 else []
  return optax.chain(*chain, core), schedule


def check_workdir(workdir: str, run) -> None:
  """ConfigError if ``workdir`` holds a run of a different config (nothing is written)."""
  old = workdir_lib.read_config(workdir)
  if old is None:
    return
  diff = workdir_lib.config_difference(old, run.config_dict)
  if diff:
    raise ConfigError(f"workdir {workdir!r} holds a run with a different config "
                      f"({'; '.join(diff)}); use a new --workdir")


def write_config(workdir: str, run, task) -> None:
  info = {"config": run.config_dict, "task": task.describe(),
          "versions": {"python": platform.python_version(), "jax": jax.__version__},
          "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
          "process_count": jax.process_count()}
  workdir_lib.write_json_atomic(os.path.join(workdir, "config.json"), info)


class Trainer:
  """Builds the sharded state and the jitted step for one run; :meth:`fit` runs it."""

  def __init__(self, run, workdir: str):
    self.run, self.workdir = run, workdir
    self.task = tasks.get(run.task).Task(run, workdir)
    self.mesh = sharding.make_mesh(run.mesh)
    self.rules = sharding.logical_rules(run.mesh)
    self.tx, self.schedule = make_optimizer(run.optimizer, run.steps)
    self.graphdef = nnx.graphdef(nnx.eval_shape(lambda: self._new_model()))
    abs_state, abs_rest = jax.eval_shape(self._init_fn)
    self.state_shardings = sharding.state_shardings(abs_state, self.mesh, self.rules)
    self.rest_shardings = jax.tree.map(
        lambda _: jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()), abs_rest)
    self.abstract_state = checkpointing.abstract_like(abs_state, self.state_shardings)
    self._step = jax.jit(self._train_step, donate_argnums=(0,),
                         out_shardings=(self.state_shardings, None))

  # -- state -----------------------------------------------------------------------------------

  def _new_model(self):
    return self.task.build_model(nnx.Rngs(params=self.run.seed, dropout=self.run.seed + 1))

  def _init_fn(self):
    _, params, rest = nnx.split(self._new_model(), nnx.Param, ...)
    state = {"params": params, "opt_state": self.tx.init(params),
             "step": jnp.zeros((), jnp.int32), "bad_step": jnp.full((), -1, jnp.int32)}
    return state, rest

  def init(self):
    """Fresh state, created already sharded."""
    with jax.set_mesh(self.mesh):
      return jax.jit(self._init_fn, out_shardings=(self.state_shardings, self.rest_shardings))()

  def model(self, state, rest):
    return nnx.merge(self.graphdef, state["params"], rest)

  # -- the step --------------------------------------------------------------------------------

  def _train_step(self, state, rest, batch):
    run = self.run
    key = jax.random.fold_in(jax.random.key(run.seed + 1), state["step"])
    accum = run.grad_accum_steps

    def loss_fn(params, micro, i):
      # copy: fresh Variables of this trace (reseeding the jit-level RngKey from inside the
      # gradient's trace is an error in flax NNX)
      model = nnx.merge(self.graphdef, params, rest, copy=True)
      nnx.reseed(model, dropout=jax.random.fold_in(key, i))
      loss, metrics = self.task.loss(model, micro, deterministic=False)
      return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    params = state["params"]
    if accum == 1:
      (loss, metrics), grads = grad_fn(params, batch, 0)
    else:
      micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

      def body(carry, inputs):
        i, mb = inputs
        (l, m), g = grad_fn(params, mb, i)
        return jax.tree.map(jnp.add, carry, (g, m)), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      _, abs_m = jax.eval_shape(lambda: loss_fn(params, jax.tree.map(lambda x: x[0], micro), 0))
      zero_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abs_m)
      (grads, metrics), _ = jax.lax.scan(body, (zeros, zero_m), (jnp.arange(accum), micro))
      grads = jax.tree.map(lambda g: g / accum, grads)
      metrics = jax.tree.map(lambda m: m / accum, metrics)
      loss = metrics["loss"]
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    ok = finite & (state["bad_step"] < 0)
    updates, opt_state = self.tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = {
        "params": keep(new_params, params),
        "opt_state": keep(opt_state, state["opt_state"]),
        "step": state["step"] + 1,
        "bad_step": jnp.where((state["bad_step"] < 0) & ~finite, state["step"] + 1,
                              state["bad_step"]),
    }
    metrics = dict(metrics, grad_norm=grad_norm, lr=self.schedule(state["step"]))
    return new_state, metrics

  def step(self, state, rest, step: int):
    local = self.task.local_batch(step, jax.process_index(), jax.process_count())
    batch = sharding.global_batch(local, self.mesh)
    with jax.set_mesh(self.mesh):
      return self._step(state, rest, batch)

  def parameter_metrics(self, state, rest) -> dict:
    """The task's metrics read off the parameters (e.g. ICL per-head omega/mu), if it has any;
    every process calls this (gathering sharded parameters is collective)."""
    with jax.set_mesh(self.mesh):
      return self.task.parameter_metrics(self.model(state, rest))

  def evaluate(self, state, rest) -> dict:
    with jax.set_mesh(self.mesh):
      return self.task.evaluate(lambda: self.model(state, rest))

  # -- resume ----------------------------------------------------------------------------------

  def restore_or_init(self, mngr):
    """(state, rest, source): workdir checkpoint, then init_from, then scratch."""
    state, rest = self.init()
    restored, step = checkpointing.restore_latest_intact(
        mngr, self.abstract_state, quarantine=jax.process_index() == 0)
    if restored is not None:
      return restored, rest, f"step {step}"
    if self.run.checkpoint.init_from:
      restored, step = checkpointing.restore_params_from(self.run.checkpoint.init_from,
                                                         self.abstract_state)
      state = dict(state, params=restored["params"])
      return state, rest, f"init_from {self.run.checkpoint.init_from} (step {step})"
    return state, rest, "scratch"


def load_trained(workdir: str, expected_task: str | None = None):
  """``(run, model, step)``: the run in ``workdir`` at its latest checkpoint, restored exactly
  as training resumes it (the run's own :class:`Trainer` state layout and shardings) and merged
  into a plain NNX module (for sampling and analysis).

  Raises:
    ConfigError: no run or no checkpoint there, or a run of another task.
  """
  from attnlab.train import settings
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"no run in {workdir!r} (config.json missing)")
  with open(path) as f:
    cd = ml_collections.ConfigDict(json.load(f)["config"])
  if expected_task is not None and cd.task != expected_task:
    raise ConfigError(f"needs a {expected_task!r} run; {workdir!r} holds task {cd.task!r}")
  run = settings.from_config(cd)
  trainer = Trainer(run, workdir)
  mngr = checkpointing.manager(workdir, run.checkpoint, read_only=True)
  try:
    state, step = checkpointing.restore_latest_intact(mngr, trainer.abstract_state,
                                                      quarantine=False)
    if state is None:
      raise ConfigError(f"no checkpoint in {workdir!r}")
  finally:
    mngr.close()
  _, rest = trainer.init()  # the non-parameter state (RNG streams), freshly initialised
  with jax.set_mesh(trainer.mesh):
    model = trainer.model(state, rest)
  return run, model, step


def train(run, workdir: str, *, verbose: bool = True) -> dict:
  """Train ``run`` in ``workdir``; returns the final metrics row (``{"preempted": True, ...}``
  if SIGTERM stopped it after saving a checkpoint).

  Process 0 holds ``workdir``'s lock (:class:`workdir.WorkdirLock`) for the whole run; it is
  taken before anything is built when the workdir exists, else as soon as it is created.

  Raises:
    ConfigError: the workdir holds a different run.
    WorkdirBusy: another trainer holds the workdir.
    Diverged: the loss became non-finite (the last good checkpoint is kept).
  """
  lock = workdir_lib.WorkdirLock(workdir)
  if jax.process_index() == 0 and os.path.isdir(workdir):
    lock.acquire()
  try:
    return _train(run, workdir, lock, verbose=verbose)
  finally:
    lock.release()


def _train(run, workdir: str, lock, *, verbose: bool) -> dict:
  check_workdir(workdir, run)
  trainer = Trainer(run, workdir)
  is_main = jax.process_index() == 0
  log = (lambda *a: print(*a, flush=True)) if (verbose and is_main) else (lambda *a: None)
  os.makedirs(workdir, exist_ok=True)
  if is_main and lock.fd is None:
    lock.acquire()
    check_workdir(workdir, run)  # in case another trainer wrote it meanwhile
  mngr = checkpointing.manager(workdir, run.checkpoint)
  state, rest, source = trainer.restore_or_init(mngr)
  start = int(state["step"])
  if start >= run.steps and mngr.latest_step() is not None:
    final = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r.get("final")]
    if final:
      log(f"run in {workdir} already finished at step {start}; nothing to do")
      mngr.close()
      return final[-1]
  if is_main:
    write_config(workdir, run, trainer.task)
  writer = MetricsWriter(workdir, resume_step=start)
  log(f"training {run.task} ({run.config_dict['attention']['name']}) from {source}; "
      f"steps {start}->{run.steps}; mesh {dict(trainer.mesh.shape)}")
  preempted = {"flag": workdir_lib.early_sigterm_received()}  # SIGTERM during start-up
  previous = signal.signal(signal.SIGTERM, lambda *_: preempted.update(flag=True))
  progress = Progress(run.steps, start, enabled=verbose and is_main)
  last_saved = mngr.latest_step()
  try:
    step = start
    while step < run.steps:
      state, metrics = trainer.step(state, rest, step)
      step += 1
      boundary = (step % run.log_every == 0 or step == run.steps
                  or step % run.checkpoint.every == 0 or preempted["flag"])
      if boundary:
        bad = int(state["bad_step"])
        if bad >= 0:
          writer.write(bad, "train", {}, diverged=True)
          raise Diverged(f"loss became non-finite at step {bad}; stopping. The last good "
                         f"checkpoint (step {last_saved}) is kept in {workdir}/checkpoints")
      if step % run.log_every == 0 or step == run.steps:
        values = {k: float(v) for k, v in metrics.items()}
        values.update(trainer.parameter_metrics(state, rest))
        row = writer.write(step, "train", values)
        progress.update(step, {k: v for k, v in row.items() if k in ("loss", "grad_norm")})
      else:
        progress.update(step)
      if step % run.eval_every == 0 and step < run.steps:
        evaluated = trainer.evaluate(state, rest)
        writer.write(step, "eval", evaluated)
        progress.message(f"eval step {step}/{run.steps}: {format_metrics(evaluated)}")
      if step % run.checkpoint.every == 0 or step == run.steps or preempted["flag"]:
        checkpointing.save(mngr, step, state, force=True)
        last_saved = step
      if preempted["flag"] and step < run.steps:
        mngr.wait_until_finished()
        log(f"preempted (SIGTERM): saved a checkpoint at step {step}; exiting")
        return {"step": step, "preempted": True}
    evaluated = trainer.evaluate(state, rest)
    final = dict(evaluated, **trainer.parameter_metrics(state, rest),
                 **trainer.task.reference_metrics())
    for name, content in trainer.task.final_files().items():
      workdir_lib.write_json_atomic(os.path.join(workdir, f"{name}.json"), content)
    row = writer.write(step, trainer.task.final_split, final, final=True)
    mngr.wait_until_finished()
    progress.message(f"done: {run.task} ({run.config_dict['attention']['name']}), step {step}, "
                     f"{row['time_s']:.0f} s; final {trainer.task.final_split_name} "
                     f"{format_metrics(evaluated)}; all metrics in "
                     f"{os.path.join(workdir, 'metrics.jsonl')}")
    return row
  finally:
    signal.signal(signal.SIGTERM, previous)
    progress.close()
    writer.close()
    mngr.wait_until_finished()
    mngr.close()
