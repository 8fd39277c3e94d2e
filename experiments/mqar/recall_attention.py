"""Where the two attention layers of trained MQAR runs put their weight (experiments/mqar/README.md).

The recall circuit of a 2-layer attention-only model: layer 0 at each value position looks at
the previous token (its key), so the value's residual stream carries its key; layer 1 at a
query position looks at the positions whose previous token is the queried key (the pair's value,
and the answer of an earlier identical query) and copies that value. This script measures both
steps on a run's fixed test sequences, for the layers whose map is a softmax over query-key
scores or ``taylor_softmax``'s normalised Taylor form of it (train/diagnostics.py):

- ``L0 prev``: layer 0's mean weight on the previous token at the context's value positions;
- ``L1 target``: layer 1's mean total weight on the target positions at the query positions;
- ``L1 s target`` / ``L1 s other``: layer 1's mean score ``q.k / sqrt(dh)`` on the target
  positions and on the other admissible positions there.

Usage (run directories of ``attnlab train`` / ``sweep`` with their checkpoints)::

  python experiments/mqar/recall_attention.py RUN [RUN ...] [--examples 256]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def _final_accuracy(run_dir: str) -> float | None:
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  finals = [r for r in rows if r.get("final") and "accuracy" in r]
  return finals[-1]["accuracy"] if finals else None


def target_positions(inputs: np.ndarray, pairs: int) -> np.ndarray:
  """``[B, L, L]`` bool: at each query position ``t = 2P + 2i``, the keys ``p < t`` at an odd
  position (a value or an earlier answer) whose previous token is the queried key."""
  b, l = inputs.shape
  prev = np.concatenate([np.full((b, 1), -1), inputs[:, :-1]], axis=1)  # token before p
  out = np.zeros((b, l, l), bool)
  odd = (np.arange(l) % 2 == 1)
  for t in range(2 * pairs, l, 2):
    out[:, t, :t] = (prev[:, :t] == inputs[:, t:t + 1]) & odd[:t]
  return out


def measure(run_dir: str, examples: int = 256) -> dict:
  """The circuit's two steps in ``run_dir``'s latest checkpoint (see the module doc)."""
  import jax.numpy as jnp

  from attnlab.train import diagnostics, loop
  from attnlab.train.tasks import mqar
  run, model, step = loop.load_trained(run_dir, expected_task="mqar")
  task = mqar.Task(run, run_dir)
  test = task.test_set()
  inputs = np.asarray(test["inputs"][:examples])
  pairs = task.s.pairs
  blocks = list(model.stack.blocks)
  reasons = [diagnostics.not_applicable(b.attn) for b in blocks]
  out = {"run": os.path.basename(os.path.normpath(run_dir)), "step": int(step),
         "attention": run.config_dict["attention"]["name"], "pairs": pairs,
         "d": run.config_dict["model"]["d_model"], "accuracy": _final_accuracy(run_dir),
         "not_applicable": [r for r in reasons if r]}
  if any(reasons[:2]):
    return out
  rec = diagnostics.attention_inputs(model, jnp.asarray(inputs))
  maps = [diagnostics.softmax_map(blocks[j].attn, rec[j]["x"], rec[j]["mask"],
                                  rec[j]["positions"]) for j in (0, 1)]
  probs0 = np.asarray(maps[0][1], np.float64).mean(axis=1)  # heads averaged: [B, L, L]
  values = np.arange(1, 2 * pairs, 2)
  out["l0_prev"] = float(probs0[:, values, values - 1].mean())
  logits1, probs1, adm1 = (np.asarray(a) for a in maps[1])
  probs1 = probs1.astype(np.float64).mean(axis=1)
  logits1 = logits1.astype(np.float64).mean(axis=1)
  adm1 = adm1.any(axis=1)
  target = target_positions(inputs, pairs)
  queries = np.arange(2 * pairs, 4 * pairs, 2)
  out["l1_target"] = float((probs1 * target).sum(-1)[:, queries].mean())
  q_rows = np.zeros(adm1.shape[1], bool)
  q_rows[queries] = True
  other = adm1 & ~target & q_rows[None, :, None]
  out["l1_score_target"] = float(logits1[target].mean())
  out["l1_score_other"] = float(logits1[other].mean())
  return out


def table(rows: list[dict]) -> str:
  head = ("| run | step | test accuracy | L0 prev | L1 target | L1 s target | L1 s other |\n"
          "|---|---|---|---|---|---|---|")
  lines = [head]
  for r in rows:
    if "l0_prev" not in r:
      lines.append(f"| {r['run']} | {r['step']} | {r['accuracy']:.3f} | "
                   f"not applicable: {'; '.join(r['not_applicable'])} | | | |")
      continue
    lines.append(f"| {r['run']} | {r['step']} | {r['accuracy']:.3f} | {r['l0_prev']:.3f} | "
                 f"{r['l1_target']:.3f} | {r['l1_score_target']:.2f} | "
                 f"{r['l1_score_other']:.2f} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="+", help="MQAR run directories with checkpoints")
  p.add_argument("--examples", type=int, default=256, help="test sequences used (default 256)")
  args = p.parse_args(argv)
  print(table([measure(r, args.examples) for r in args.runs]))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
