"""Per-head KQ / OV patterns of trained He et al. models \
(experiments/icl_regression/README.md §1.6).

For each run folder (``attnlab train`` of configs/icl_regression.py with ``standard``), restores
the latest checkpoint and computes, per head h, with D = d + 1:

* ``M_h = Q^hT K^h`` (D x D; the logit is ``z_q^T M_h z_l / sqrt(D)``) and ``OV_h`` (the
  D-vector of ``V^h`` composed with the read-out ``O^h``); ``mu_h`` is OV_h's last entry;
* ``omega_h`` = mean of the first d diagonal entries of M_h / sqrt(d + 2) (the reference
  repository's convention, its +-0.13 lines), and ``omega_h * sqrt((d+2)/(d+1))`` (the logit's);
* homogeneity (CV of diag(M_xx), ||offdiag(M_xx)||_F / ||diag||_F), y leakage (largest |entry|
  of M_h's last row/column over max |diag|), last-entry-only (||OV_h[:d]|| / |mu_h|), the
  zero-sum residual |sum mu| / sum |mu| and the active heads (|mu_h| > 0.05 max |mu|);
* for multi-task runs (§1.9), mu_{h,t}, omega_{h,t}, the heads serving each task and the
  shared heads (the math lives in :mod:`attnlab.train.icl_heads`, which training also logs);
* for runs with anisotropic covariates (§1.8), the pre-conditioner
  Gamma = sum_h mu_h M_h,xx^T / sqrt(D) and its cosine with Sigma^-1 and with I.

Writes a Markdown table (stdout and ``--out``) and one heatmap PNG per run (``--plots``).

    python experiments/icl_regression/heads.py runs/icl_regression/model.num_heads=*,seed=0 \
        --out experiments/icl_regression/results/heads.md --plots experiments/icl_regression/results
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from attnlab.train.icl_heads import head_matrices, head_scores, task_scores


def preconditioner(m: np.ndarray, ov: np.ndarray, d: int) -> np.ndarray:
  """Γ = Σ_h μ_h M_h,xxᵀ / sqrt(D): the pre-conditioner a ± head pair applies
  (experiments/icl_regression/README.md §1.8)."""
  mu = ov[:, -1, 0] if ov.ndim == 3 else ov[:, -1]
  return np.einsum("h,hij->ji", mu, m[:, :d, :d]) / np.sqrt(d + 1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def plot(m: np.ndarray, ov: np.ndarray, title: str, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  h = m.shape[0]
  fig, axes = plt.subplots(2, h, figsize=(2.6 * h + 0.8, 5.0), squeeze=False,
                           gridspec_kw={"height_ratios": [6, 1]})
  ov = ov if ov.ndim == 3 else ov[..., None]  # [H, D, n_out]: one row per output below
  lim_m, lim_ov = np.abs(m).max(), np.abs(ov).max()
  for i in range(h):
    im = axes[0, i].imshow(m[i], cmap="RdBu_r", vmin=-lim_m, vmax=lim_m)
    axes[0, i].set_title(f"head {i}: KQ = Q^T K")
    iov = axes[1, i].imshow(ov[i].T, cmap="RdBu_r", vmin=-lim_ov, vmax=lim_ov)
    axes[1, i].set_title("OV per output (y entries last)", fontsize=9)
    for ax in axes[:, i]:
      ax.set_xticks([]), ax.set_yticks([])
  fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8)
  fig.colorbar(iov, ax=axes[1, :].tolist(), shrink=0.8)
  fig.suptitle(title)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gamma(gamma: np.ndarray, sigma_inv: np.ndarray, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
  for ax, mat, title in ((axes[0], gamma / np.abs(gamma).max(), "Γ (learned, / max)"),
                         (axes[1], sigma_inv / np.abs(sigma_inv).max(), "Σ⁻¹ (/ max)")):
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(title)
    ax.set_xticks([]), ax.set_yticks([])
  fig.colorbar(im, ax=axes.tolist(), shrink=0.8)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def fmt(values) -> str:
  return " / ".join(f"{v:+.3f}" for v in values)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("runs", nargs="+", help="run folders (`standard`, configs/icl_regression.py)")
  ap.add_argument("--out", default=None, help="also write the Markdown table here")
  ap.add_argument("--plots", default=None, help="folder for one heatmap PNG per run")
  args = ap.parse_args()
  from attnlab.train import loop
  lines = ["| run | step | ω_h (÷sqrt(d+2)) | ω_h (logit scale) | μ_h | active heads | "
           "zero-sum residual | CV diag | offdiag/diag | y leakage | last-entry-only |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  gammas, tasks = [], []
  for run_dir in args.runs:
    run, model, step = loop.load_trained(run_dir, expected_task="icl_regression")
    if run.task_settings.attention.name != "standard":
      raise SystemExit(f"{run_dir}: KQ/OV scores apply to `standard` only "
                       f"(got {run.task_settings.attention.name!r}; "
                       "experiments/icl_regression/README.md §1.6)")
    d = run.task_settings.d
    m, ov = head_matrices(model)
    name = os.path.basename(os.path.normpath(run_dir))
    if args.plots:
      os.makedirs(args.plots, exist_ok=True)
      plot(m, ov, f"{name}, step {step}", os.path.join(args.plots, f"heads_{name}.png"))
    if run.task_settings.kind == "multitask":
      from attnlab.train.data_icl import multitask_slices
      from attnlab.train.tasks.icl_regression import MULTITASK_DIMS
      t = task_scores(m, ov, d, multitask_slices(d, *MULTITASK_DIMS))
      tasks.append(f"| `{name}` | {step} | {fmt(t['mu'][:, 0])} | {fmt(t['mu'][:, 1])} | "
                   f"{fmt(t['omega'][:, 0])} | {fmt(t['omega'][:, 1])} | "
                   f"{int(t['active'].sum())} | {int(t['shared'].sum())} |")
      print(tasks[-1], flush=True)
      continue
    s = head_scores(m, ov, d)
    if run.task_settings.covariance == "anisotropic":
      from attnlab.train.data_icl import anisotropic_cov
      sigma_inv = np.linalg.inv(anisotropic_cov(d))
      gamma = preconditioner(m, ov, d)
      gammas.append(f"| `{name}` | {step} | {cosine(gamma, sigma_inv):.3f} | "
                    f"{cosine(gamma, np.eye(d)):.3f} |")
      if args.plots:
        plot_gamma(gamma, sigma_inv, os.path.join(args.plots, f"gamma_{name}.png"))
    lines.append(f"| `{name}` | {step} | {fmt(s['omega'])} | {fmt(s['omega_logit'])} | "
                 f"{fmt(s['mu'])} | {int(s['active'].sum())} of {len(s['mu'])} | "
                 f"{s['zero_sum_residual']:.3f} | {fmt(s['cv_diag'])} | "
                 f"{fmt(s['offdiag_ratio'])} | {fmt(s['y_leakage'])} | "
                 f"{fmt(s['last_entry_only'])} |")
    print(lines[-1], flush=True)
  if gammas:
    lines += ["", "Anisotropic covariates (experiments/icl_regression/README.md §1.8): "
              "Γ = Σ_h μ_h M_h,xxᵀ / sqrt(D)", "",
              "| run | step | cos(Γ, Σ⁻¹) | cos(Γ, I) |", "|---|---|---|---|"] + gammas
    print("\n".join(lines[-len(gammas) - 2:]))
  if len(lines) == 2:  # no single-task run: leave out the empty table
    lines = []
  if tasks:
    lines += ["", "Multi-task runs (experiments/icl_regression/README.md §1.9): "
              "μ_{h,t} (OV entry y_t -> output t), ω_{h,t} "
              "(mean diag M_h on task t's coordinates ÷ sqrt(d+2)); head h serves t if "
              "|μ_{h,t}| > 0.1 max|μ|", "",
              "| run | step | μ_h,1 | μ_h,2 | ω_h,1 | ω_h,2 | active heads | shared heads |",
              "|---|---|---|---|---|---|---|---|"] + tasks
  text = "\n".join(lines)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
