"""``attnlab diagnose WORKDIR``: per-layer attention diagnostics of a trained LM run (plots
L-P3 and L-P4 of experiments/lm_ablation/README.md §3.2).

The run's latest checkpoint is restored exactly as ``attnlab sample`` does
(:func:`attnlab.train.loop.load_trained`) and run on validation windows (evenly spaced among the
run's own evaluation windows). Each block's attention input (the LayerNorm output, with the
positions and mask the model passes) is captured during that forward pass by a recorder put in
front of ``block.attn`` for the pass (nothing in models/ changes); the layer's softmax map is
then computed from its own parameters with the layer's own code: ``project_from_options`` of
``standard`` (projections, RoPE), ``kernels.dot_product_logits`` (scale ``1/sqrt(head_dim)``),
``kernels.admissible`` and ``kernels.masked_softmax``.

Applicable layers: those whose map is a softmax over query-key scores, ``standard``,
``memory_efficient`` and ``uniform_broadcast`` with ``softmax_heads`` (its softmax heads, before
context broadcasting), and ``enhanced_interactive`` in its default form (each head's map is a
softmax over that head's ISI/CSI-mixed scores, computed with the layer's own ``layer_logits``; its
"logits" are those mixed scores, not one head's q·k), ``taylor_softmax`` (its normalised Taylor
weights) and the qk-controls ``random_seq_qk``, ``fixed_text_qk`` and ``static_embedding_qk``
(a softmax over the scores of the query/key source the stack passes them as ``symbols``, with
``qk_controls.project_qk``: for the fixed-sequence controls the same map for every input);
every other layer, and EIT with
``csi_after_softmax`` (its weights are CSI mixtures of probabilities, not one softmax), is
listed as not applicable.

Per layer and head, averaged over causal queries that see ``t >= 2`` keys: **entropy** of the
attention row divided by ``log t`` (1 = uniform), **sink** (mass on the first token of the
window), **local** (mass on the keys at distances 0-3 from the query); their std over heads
(ddof = 0: the heads are all there are);
and a histogram of the pre-softmax logits (admissible pairs). A uniform map gives entropy 1,
sink ``mean 1/t`` and local ``mean min(4, t)/t`` (``uniform_reference`` in the file).

Writes ``WORKDIR/diagnostics.json`` and ``WORKDIR/diagnostics_heads.png`` /
``WORKDIR/diagnostics_logits.png``; ``attnlab report`` tabulates every run that has the file.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

LOCAL_DISTANCES = 4
"""Local focus: mass on the keys at distances 0 .. LOCAL_DISTANCES - 1."""
HIST_BINS = 60
ABS_EDGES = np.logspace(-3, 4, 71)
"""Bins of the |logit| histogram (plot L-P4), the same for every run: 10 per decade from 1e-3
to 1e4; smaller and larger values are counted in the first and last bin."""
METRICS = ("entropy", "sink", "local")


def not_applicable(layer) -> str | None:
  """None when ``layer``'s map is a softmax over query-key scores (or ``taylor_softmax``'s
  normalised second-order Taylor form of it), else the reason."""
  from attnlab.models.attention import (controls, enhanced_interactive, standard,
                                        uniform_broadcast)
  apply = type(layer).apply
  if apply in (standard.standard_apply, standard.memory_efficient_apply,
               controls.taylor_softmax_apply) or _is_qk_control(layer):
    return None
  if apply is enhanced_interactive.enhanced_interactive_apply:
    return ("csi_after_softmax: its weights are CSI mixtures of probabilities, not one softmax"
            if layer.options.csi_after_softmax else None)
  if apply is uniform_broadcast.uniform_broadcast_apply:
    return None if layer.options.softmax_heads else "uniform map only (softmax_heads=False)"
  return f"`{type(layer).name}` is not a softmax over query-key scores"


class _Recorder:
  """Stands in for ``block.attn`` during one forward pass: records the input, then calls it."""

  def __init__(self, layer, store: list):
    self.layer, self.store = layer, store

  def __call__(self, x, mask=None, **kwargs):
    self.store.append({"x": x, "mask": mask, "positions": kwargs.get("positions"),
                       "symbols": kwargs.get("symbols")})
    return self.layer(x, mask, **kwargs)

  def __getattr__(self, name):  # the stack reads layer attributes (e.g. ``qk_source``)
    return getattr(self.layer, name)


def attention_inputs(model, tokens) -> list[dict | None]:
  """Each block's attention input ``{"x", "mask", "positions"}`` in one forward pass of
  ``model`` (a :class:`~attnlab.models.transformer.LanguageModel`) on ``tokens [B, L]``."""
  blocks = list(model.stack.blocks)
  stores: list[list] = [[] for _ in blocks]
  originals = [b.attn for b in blocks]
  try:
    for b, store in zip(blocks, stores):
      b.attn = _Recorder(b.attn, store)
    model(tokens)
  finally:
    for b, layer in zip(blocks, originals):
      b.attn = layer
  # The real input's call is the last one: a qk-control stack runs its fixed stream
  # (``[1, max_len, D]``) through each block first.
  shape = tuple(tokens.shape)
  return [next((c for c in reversed(s) if tuple(c["x"].shape[:2]) == shape), None)
          for s in stores]


def _is_qk_control(layer) -> bool:
  from attnlab.models.attention import qk_controls
  return type(layer).apply in (qk_controls.random_seq_qk_apply, qk_controls.fixed_text_qk_apply,
                               qk_controls.static_embedding_qk_apply)


def softmax_map(layer, x, mask=None, positions=None, symbols=None):
  """``(logits, probs, admissible)`` ``[B, H, L, L]`` of a softmax layer on its input ``x``,
  from the layer's own projections and kernels (``probs`` are what its output weights ``v``
  with: ``taylor_softmax``'s normalised ``1 + s + s^2/2`` for that layer). A qk-control's
  queries and keys come from ``symbols`` (``[B or 1, L, d]``, what the stack passed it)."""
  import jax.numpy as jnp

  from attnlab.models.attention import common, controls
  from attnlab.models.attention import enhanced_interactive as eit
  from attnlab.models.attention import kernels, qk_controls
  from attnlab.models.attention.standard import project_from_options
  params, o = layer.params(), layer.options
  is_eit = type(layer).apply is eit.enhanced_interactive_apply
  if _is_qk_control(layer):
    if symbols is None:
      raise ValueError(f"`{type(layer).name}`: its map needs the query/key source the model "
                       "passes as symbols (a standalone layer has none recorded)")
    positions = common.resolve_positions(x, positions, None)
    q, k = qk_controls.project_qk(params, jnp.broadcast_to(symbols, x.shape), o,
                                  num_heads=layer.num_heads, positions=positions)
  else:
    q, k, _, positions = project_from_options(
        params, x, o, num_heads=layer.num_heads,
        num_kv_heads=layer.num_heads if is_eit else layer.num_kv_heads, positions=positions,
        cache=None)
  if is_eit:
    logits = eit.layer_logits(params, q, k, mixed_key=o.mixed_key, efficient=o.efficient)
  else:
    logits = kernels.dot_product_logits(q, k, 1.0 / math.sqrt(q.shape[-1]))
  adm = kernels.admissible(positions, positions, mask, layer.causal)
  adm = jnp.broadcast_to(adm, logits.shape)
  if type(layer).apply is controls.taylor_softmax_apply:
    return logits, controls.taylor_weights(logits, adm), adm
  return logits, kernels.masked_softmax(logits, adm), adm


def head_sums(probs, adm) -> tuple[dict[str, np.ndarray], int]:
  """Per-head sums over queries with ``t >= 2`` admissible keys of the three metrics, and the
  number of such queries (per head)."""
  p, a = np.asarray(probs, np.float64), np.asarray(adm)
  t = a.sum(-1)  # keys seen per query [B, H, L]
  use = t >= 2
  plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)
  entropy = -plogp / np.log(np.maximum(t, 2))
  first = np.argmax(a, axis=-1)  # the first admissible key of each query
  sink = np.take_along_axis(p, first[..., None], axis=-1)[..., 0]
  lq, lk = p.shape[-2:]
  dist = np.arange(lq)[:, None] - np.arange(lk)[None, :]
  local = (p * ((dist >= 0) & (dist < LOCAL_DISTANCES))).sum(-1)
  out = {name: np.where(use, v, 0.0).sum(axis=(0, 2))
         for name, v in (("entropy", entropy), ("sink", sink), ("local", local))}
  return out, int(use.sum(axis=(0, 2))[0])


def uniform_reference(seq_len: int) -> dict[str, float]:
  """The metrics of uniform causal attention over a window of ``seq_len`` (queries t >= 2)."""
  t = np.arange(2, seq_len + 1, dtype=np.float64)
  return {"entropy": 1.0, "sink": float(np.mean(1 / t)),
          "local": float(np.mean(np.minimum(LOCAL_DISTANCES, t) / t))}


def layer_diagnostics(model, windows: np.ndarray, batch_size: int = 16) -> list[dict]:
  """Per-layer diagnostics of ``model`` on token windows ``[N, L]`` (see the module doc)."""
  import jax.numpy as jnp
  blocks = list(model.stack.blocks)
  reasons = [not_applicable(b.attn) for b in blocks]
  sums = [None] * len(blocks)
  counts = [0] * len(blocks)
  logits_all: list[list[np.ndarray]] = [[] for _ in blocks]
  for i in range(0, len(windows), batch_size):
    inputs = attention_inputs(model, jnp.asarray(windows[i:i + batch_size]))
    for j, (block, rec) in enumerate(zip(blocks, inputs)):
      if reasons[j] is not None or rec is None:
        continue
      logits, probs, adm = softmax_map(block.attn, rec["x"], rec["mask"], rec["positions"],
                                       rec["symbols"])
      s, n = head_sums(probs, adm)
      sums[j] = s if sums[j] is None else {k: sums[j][k] + s[k] for k in s}
      counts[j] += n
      logits_all[j].append(np.asarray(logits)[np.asarray(adm)])
  layers = []
  for j, block in enumerate(blocks):
    name = model.cfg.layer_attention(j)[0]
    if reasons[j] is not None or not counts[j]:
      layers.append({"layer": j, "variant": name, "applicable": False,
                     "reason": reasons[j] or "no query sees 2 keys"})
      continue
    heads = {k: (v / counts[j]).tolist() for k, v in sums[j].items()}
    values = np.concatenate(logits_all[j])
    hist, edges = np.histogram(values, bins=HIST_BINS)
    abs_hist, _ = np.histogram(np.clip(np.abs(values), ABS_EDGES[0], ABS_EDGES[-1]),
                               bins=ABS_EDGES)
    layers.append({
        "layer": j, "variant": name, "applicable": True, "queries": counts[j],
        "heads": heads,
        "mean": {k: float(np.mean(v)) for k, v in heads.items()},
        "std_over_heads": {k: float(np.std(v)) for k, v in heads.items()},
        "logits": {"edges": edges.tolist(), "counts": hist.tolist(),
                   "abs_edges": ABS_EDGES.tolist(), "abs_counts": abs_hist.tolist(),
                   "min": float(values.min()), "max": float(values.max()),
                   "abs_max": float(np.abs(values).max()), "mean": float(values.mean()),
                   "std": float(values.std())}})
  return layers


def diagnose(workdir: str, windows: int = 64, batch_size: int = 16) -> dict:
  """Restore ``workdir``'s latest checkpoint, compute the diagnostics on ``windows`` validation
  windows, write ``diagnostics.json`` and the PNGs; returns the JSON content."""
  from attnlab.train import loop
  from attnlab.train.tasks import lm
  run, model, step = loop.load_trained(workdir, expected_task="lm")
  task = lm.Task(run, workdir)
  val = task.val_inputs
  pick = np.unique(np.linspace(0, len(val) - 1, min(windows, len(val))).round().astype(int))
  seq_len = int(val.shape[1])
  out = {"workdir": os.path.abspath(workdir), "step": int(step),
         "attention": run.config_dict["attention"]["name"],
         "layout": run.config_dict["attention"].get("layout"), "seed": run.seed,
         "windows": int(pick.size), "window_indices": pick.tolist(), "seq_len": seq_len,
         "local_distances": LOCAL_DISTANCES, "uniform_reference": uniform_reference(seq_len),
         "layers": layer_diagnostics(model, val[pick], batch_size)}
  from attnlab.train import workdir as workdir_lib
  workdir_lib.write_json_atomic(os.path.join(workdir, "diagnostics.json"), out)
  out["plots"] = write_plots(out, workdir)
  return out


def write_plots(diag: dict, directory: str) -> list[str]:
  """``diagnostics_heads.png`` (per head: entropy, sink, local vs layer) and
  ``diagnostics_logits.png`` (logit histogram per layer) of one run's diagnostics."""
  from attnlab.train.report import plots as plotting
  layers = [l for l in diag["layers"] if l["applicable"]]
  if not layers:
    return []
  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
  ref = diag["uniform_reference"]
  for ax, metric in zip(axes, METRICS):
    for l in layers:
      ys = l["heads"][metric]
      ax.scatter([l["layer"]] * len(ys), ys, s=14, color="tab:blue", alpha=0.7)
    ax.plot([l["layer"] for l in layers], [l["mean"][metric] for l in layers], "k-",
            label="mean over heads")
    ax.axhline(ref[metric], color="0.5", linestyle="--", label="uniform attention")
    ax.set_xlabel("layer (0-indexed)")
    ax.set_title({"entropy": "entropy / log t", "sink": "mass on first token",
                  "local": f"mass at distance 0-{LOCAL_DISTANCES - 1}"}[metric])
    ax.set_xticks([l["layer"] for l in diag["layers"]])
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{diag['attention']} {diag.get('layout') or ''}, step {diag['step']}: "
               f"per-head attention ({diag['windows']} windows)")
  files = [plotting.save(fig, directory, "diagnostics_heads.png")]
  fig, ax = plt.subplots(figsize=(6, 4))
  for l in layers:
    logit_histogram(ax, l, f"layer {l['layer']}")
  ax.set_title(f"{diag['attention']} {diag.get('layout') or ''}: logits per layer")
  ax.legend(fontsize=7)
  files.append(plotting.save(fig, directory, "diagnostics_logits.png"))
  return files


def logit_histogram(ax, layer: dict, label: str) -> None:
  """Plot L-P4 of one layer on ``ax``: count (log y) against |pre-softmax logit| (log x)."""
  counts = np.array(layer["logits"]["abs_counts"], float)
  ax.stairs(np.where(counts > 0, counts, np.nan), np.array(layer["logits"]["abs_edges"]),
            label=label)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("|pre-softmax logit|")
  ax.set_ylabel("count of (query, key) pairs")


def add_parser(sub, formatter, wrap=lambda text: text) -> None:
  """The ``diagnose`` subcommand of ``attnlab`` (``formatter``/``wrap``: the CLI's help
  formatting)."""
  d = sub.add_parser(
      "diagnose", formatter_class=formatter,
      help="per-layer attention diagnostics of an LM run (entropy, sink, locality, logits)",
      description=wrap("Restore an LM run's latest checkpoint and measure, per layer and head of "
                  "its softmax attention layers, the normalised entropy, the mass on the first "
                  "token and on distances 0-3, and the pre-softmax logit histogram, on "
                  "validation windows; writes WORKDIR/diagnostics.json and PNGs "
                  "(train/diagnostics.py). 'attnlab report' tabulates them."),
      epilog="example:\n  attnlab diagnose runs/lm_cpu/attention=standard,layout=uniform,seed=0")
  d.add_argument("workdir", help="an LM run's directory (with checkpoints)")
  d.add_argument("--windows", type=int, default=64,
                 help="validation windows, evenly spaced among the run's (default: 64)")
  d.set_defaults(fn=main)


def main(args, overrides=None) -> int:
  """``attnlab diagnose WORKDIR``: write the diagnostics and print a per-layer summary."""
  del overrides
  if args.windows < 1:
    from attnlab.train.config_loading import ConfigError
    raise ConfigError(f"attnlab diagnose: --windows must be >= 1, got {args.windows}")
  diag = diagnose(args.workdir, windows=args.windows)
  print(f"{diag['attention']} ({diag['layout']}), step {diag['step']}, {diag['windows']} "
        f"windows of {diag['seq_len']} bytes; uniform attention would give "
        + ", ".join(f"{k} {v:.3f}" for k, v in diag["uniform_reference"].items()))
  for l in diag["layers"]:
    if not l["applicable"]:
      print(f"  layer {l['layer']} ({l['variant']}): not applicable: {l['reason']}")
      continue
    print(f"  layer {l['layer']} ({l['variant']}): "
          + ", ".join(f"{k} {l['mean'][k]:.3f} ± {l['std_over_heads'][k]:.3f}" for k in METRICS)
          + f" (mean ± std over heads); |logit| max {l['logits']['abs_max']:.2f}")
  print(f"wrote {os.path.join(args.workdir, 'diagnostics.json')} and "
        f"{', '.join(diag['plots']) or 'no plots'}")
  return 0


def read(path: str) -> dict | None:
  """A run's ``diagnostics.json`` (None when absent or unreadable)."""
  try:
    with open(os.path.join(path, "diagnostics.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
