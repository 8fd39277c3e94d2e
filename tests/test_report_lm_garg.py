"""Reports of the LM ablation (tables L1, L2, n-gram rows) and of Garg et al.'s table B1."""

import json
import os

from attnlab.train import report
from test_sweep_report import lm_config, table_lines, write_run


def test_report_lm_table(tmp_path):
  root = str(tmp_path)
  numbers = {("standard", "uniform"): (3.0, 3.2), ("standard", "hybrid"): (3.0, 3.2),
             ("memory_efficient", "uniform"): (3.0, 3.2),
             ("memory_efficient", "hybrid"): (3.0, 3.2),
             ("relational", "uniform"): (4.0, 4.2), ("relational", "hybrid"): (3.1, 6.0)}
  for (name, layout), (bpb, skip) in numbers.items():
    for seed in (0, 1):
      rows = [{"step": s, "time_s": s / 10.0, "split": "train", "loss": 2.0} for s in (50, 100)]
      rows.append({"step": 50, "time_s": 5.0, "split": "eval", "bpb": bpb + 0.5})
      write_run(root, f"{name}-{layout}-{seed}", lm_config(name, layout, seed),
                {"bpb": bpb + 0.01 * seed, "skip_bpb": skip, "loss": bpb * 0.69}, rows)
  text, plots = report.build_report(root)
  lines = table_lines(text)
  rel = lines["`relational`"].split(" | ")
  assert rel[1] == "4.005 ± 0.007 (n=2) (×2.00)"
  assert rel[2] == "3.105 ± 0.007 (n=2) (×1.07)"
  assert rel[3].startswith("6.000 ± 0.000 (n=2)")
  assert lines["`standard`"].split(" | ")[3] == "—"
  assert "`relational` Hybrid within 10% of `standard` (3.105 vs 3.005 bpb): ok" in text
  assert "`relational` Skip far worse than its Hybrid" in text
  assert sum(l.startswith("- `memory_efficient` = `standard`") for l in text.splitlines()) == 2
  assert "**FAIL**" not in text
  assert "`standard` Uniform beats the unigram (3.005 < 4.68 bpb; the bigram's 3.34: beaten)" \
      in text
  assert lines["`relational`"].split(" | ")[4].endswith("M")  # parameter count
  assert lines["`standard`"].split(" | ")[5] == "640 |"  # 50 steps x 4 x 16 tokens in 5 s
  assert "lm_val_bpb_vs_step.png" in plots and os.path.exists(
      os.path.join(root, "lm_val_bpb_vs_step.png"))


def test_report_lm_ngram_reference_rows(tmp_path):
  """Runs carrying the n-gram baselines get italic reference rows in table L1 and a check
  against them (in place of the pydoc constants); runs without them keep the old check."""
  root = str(tmp_path)
  ngram = {**{f"ngram_addk_bpb@n={n}": 5.0 - 0.5 * n for n in range(1, 6)},
           **{f"ngram_kn_bpb@n={n}": 4.9 - 0.6 * n for n in range(1, 6)},
           **{f"ngram_addk_k@n={n}": 0.1 for n in range(1, 6)}}
  for name in ("standard", "relational"):
    for seed in (0, 1):
      write_run(root, f"{name}-{seed}", lm_config(name, "uniform", seed),
                {"bpb": 3.0 + 0.01 * seed, "loss": 2.0, **ngram})
  text, _ = report.build_report(root)
  lines = table_lines(text)
  assert lines["*4-gram add-k (k=0.1)*"].split(" | ")[1:] == ["*3.000*", "—", "—", "—",
                                                              "— |"]
  assert lines["*5-gram Kneser-Ney*"].split(" | ")[1] == "*1.900*"
  assert sum(l.startswith("| *") and "-gram" in l for l in text.splitlines()) == 10
  assert ("`standard` Uniform beats the add-k unigram (3.005 < 4.500 bpb, same validation "
          "bytes; the add-k bigram's 4.000: beaten; the Kneser-Ney 5-gram's 1.900: not beaten)"
          ": ok") in text
  assert "4.68" not in text and "Italic rows: byte-level n-gram baselines" in text


def test_report_lm_context_table(tmp_path):
  """Table L2: bpb@ctx=c columns plus the training context (the run's bpb), and plot L-P2;
  runs without eval.contexts give no L2 table."""
  root = str(tmp_path)
  for name in ("standard", "adaptive_filter"):
    for seed in (0, 1):
      base = 3.0 if name == "standard" else 2.9
      final = {"bpb": base + 0.01 * seed, "loss": 2.0,
               **{f"bpb@ctx={c}": base + 0.1 * (16 // c) + 0.01 * seed for c in (4, 8)}}
      write_run(root, f"{name}-{seed}", lm_config(name, "uniform", seed), final)
  text, plots = report.build_report(root)
  assert "| variant | ctx=4 | ctx=8 | ctx=16 |" in text
  l2_part = text.split("### Table L2: validation")[1].split("### Table L2 with 95%")[0]
  l2 = [l for l in l2_part.splitlines() if l.startswith("| `adaptive_filter`")]
  assert l2[-1].split(" | ")[1:] == ["3.305 ± 0.007 (n=2)", "3.105 ± 0.007 (n=2)",
                                     "2.905 ± 0.007 (n=2) |"]
  assert "lm_bpb_vs_context.png" in plots and os.path.exists(
      os.path.join(root, "lm_bpb_vs_context.png"))
  plain = str(tmp_path / "plain")
  write_run(plain, "standard-0", lm_config("standard", "uniform", 0), {"bpb": 3.0})
  text, plots = report.build_report(plain)
  assert "Table L2" not in text and "lm_bpb_vs_context.png" not in plots


def test_report_garg_table(tmp_path):
  root = str(tmp_path)
  for name, seed, e in (("standard", 0, 0.5), ("standard", 1, 0.7), ("relational", 0, 0.9)):
    final = {f"nerr@k={k}": (e if k == 2 else 0.1) for k in range(11)}
    final.update({f"least_squares_nerr@k={k}": max(1 - k / 5, 0) for k in range(11)})
    final.update({f"averaging_nerr@k={k}": 6 / max(k, 1) for k in range(11)})
    if name == "relational":  # one seed: its plot draws the logged bootstrap band
      final.update({f"nerr_{p}@k={k}": final[f"nerr@k={k}"] + dv for k in range(11)
                    for p, dv in (("p05", -0.05), ("p95", 0.05))})
    config = {"task": "icl_garg", "seed": seed, "attention": {"name": name, "impl": "xla"},
              "data": {"d": 5, "n_points": 11},
              "curriculum": {"dims": [5, 5, 1, 2000], "points": [11, 11, 2, 2000]}}
    write_run(root, f"{name}{seed}", config, final)
  text, plots = report.build_report(root)
  lines = table_lines(text)
  assert "| setting | left the plateau | k=2 | k=4 | k=5 | k=10 |" in text
  assert lines["`standard`"].split(" | ")[1] == "2/2"  # 0.1 at k = 2d, averaging 0.6
  assert lines["`standard`"].split(" | ")[2] == "0.600 ± 1.271 (n=2)"  # 95% t, n = 2
  assert "*0.600*" in lines["*least squares* (computed: same test prompts)"]
  assert "icl_garg_nerr_vs_k.png" in plots
  assert "nerr_p05" not in text  # the band is a plot, not a table column


def test_report_lm_same_parameter_check_decides_memory_efficient(tmp_path):
  """With memory_efficient_check.json in the folder (check_memory_efficient.py), trained
  `memory_efficient` runs that drifted from `standard` are reported without a verdict and the
  same-parameter comparison is the acceptance line: ok within 5e-4 bpb, FAIL beyond."""
  root = str(tmp_path)
  for name, bpb in (("standard", 3.000), ("memory_efficient", 3.009)):
    for seed in (0, 1):
      write_run(root, f"{name}-{seed}", lm_config(name, "uniform", seed),
                {"bpb": bpb, "loss": 2.0})
  text, _ = report.build_report(root)
  assert "- `memory_efficient` = `standard` (`memory_efficient`; seeds [0, 1]" in text
  assert "**FAIL**" in text  # no same-parameter check: the trained runs decide

  def write_check(diff):
    rows = [{"run": f"memory_efficient-{s}", "trained": 3.009, "standard": 3.0091,
             "memory_efficient": 3.0091 + diff} for s in (0, 1)]
    with open(os.path.join(root, "memory_efficient_check.json"), "w") as f:
      json.dump({"spec": "x", "runs": rows}, f)

  write_check(1e-7)
  text, _ = report.build_report(root)
  assert "**FAIL**" not in text
  assert ("- trained runs, `memory_efficient` = `standard` (`memory_efficient`; seeds "
          "[0, 1]; 1 metrics, largest |Δ| 9.0e-03; differ: bpb: 3.009 vs 3.000): not equal at "
          "the printed precision") in text
  assert ("- `memory_efficient` = `standard` on the same parameters (2 trained checkpoints "
          "evaluated with both kernels, memory_efficient_check.json; largest |Δ| 1.0e-07 bpb): "
          "ok") in text
  write_check(1e-3)
  text, _ = report.build_report(root)
  assert "largest |Δ| 1.0e-03 bpb): **FAIL**" in text
