"""The in-context regression studies' report (issue #15): one test set per setting (checked),
bimodal H = 2 outcomes, per-head columns, tables A6 / B2 from ``ood.json``, and the sweeps."""

import json
import os

import numpy as np
import pytest

from attnlab.train import sweep
from attnlab.train.report import build_report, icl_plateau, testsets
from attnlab.train.report.tables import ci_cell

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(root, name, config, final, ood=None):
  path = os.path.join(root, name)
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"config": config, "task": {}, "device": "cpu x1"}, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write(json.dumps(dict(step=2000, time_s=10.0, split="test", final=True, **final)) + "\n")
  if ood is not None:
    with open(os.path.join(path, "ood.json"), "w") as f:
      json.dump(ood, f)


def config(heads, seed, name="standard", **options):
  return {"task": "icl_regression", "seed": seed, "steps": 2000,
          "attention": {"name": name, "impl": "xla", "options": options},
          "model": {"num_heads": heads, "normalization": "softmax"},
          "data": {"d": 5, "n_context": 40, "noise_var": 0.1, "covariance": "isotropic",
                   "kind": "linear"}}


def final(m40, zero=1.101, sha="aaaa", heads=None):
  out = {f"mse@L={l}": m40 + dl for l, dl in ((10, 0.3), (40, 0.0), (100, -0.08))}
  out.update({f"zero_mse@L={l}": zero for l in (10, 40, 100)})
  out.update({"single_head_optimum_mse@L=40": 0.415, "multihead_estimator_mse@L=40": 0.248,
              "dgd_mse@L=40": 0.248})
  if sha:
    out["test_set_sha256"] = sha
  for h, (w, u) in enumerate(heads or []):
    out[f"omega@h={h}"], out[f"mu@h={h}"] = w, u
  return out


def rows(text):
  return [l for l in text.splitlines() if l.startswith("| ")]


def row(text, start):
  return next(l for l in rows(text) if l.startswith(f"| {start}"))


def test_ci_cell_is_mean_and_95_percent_t_interval():
  v = [0.25, 0.26, 0.24]
  half = 4.302652729911275 * np.std(v, ddof=1) / np.sqrt(3)
  assert ci_cell(v) == f"0.250 ± {half:.3f} (n=3)"
  assert ci_cell([0.3]) == "0.300 (n=1)" and ci_cell([]) == "—"


def test_runs_on_different_test_sets_are_split_and_named_not_averaged(tmp_path):
  root = str(tmp_path)
  write_run(root, "h1s0", config(1, 0), final(0.40, sha="aaaa"))
  write_run(root, "h1s1", config(1, 1), final(0.42, sha="aaaa"))
  write_run(root, "h1s2", config(1, 2), final(0.44, zero=1.095, sha="bbbb"))
  text, _ = build_report(root)
  assert "**TEST SETS DIFFER within `standard`, H=1**" in text
  assert "T2 (sha256 bbbb): h1s2" in text
  assert row(text, "`standard`, H=1 [test set T1: h1s0, h1s1]").count("(n=2)") == 3
  assert "(n=1)" in row(text, "`standard`, H=1 [test set T2: h1s2]")
  zero_t1 = row(text, "*zero predictor* (computed: closed form on the same test prompts) "
                      "[test set T1]")
  zero_t2 = row(text, "*zero predictor* (computed: closed form on the same test prompts) "
                      "[test set T2]")
  assert "*1.101*" in zero_t1 and "*1.095*" in zero_t2
  assert "*1.099*" not in text  # never the mean over both test sets


def test_old_runs_without_fingerprint_are_told_apart_by_their_reference_values(tmp_path):
  """The committed A1 case: H = 1 seed 0 has the same config but another zero-predictor MSE."""
  root = str(tmp_path)
  write_run(root, "s0", config(1, 0), final(0.40, zero=1.0918, sha=None))
  write_run(root, "s1", config(1, 1), final(0.41, zero=1.0970, sha=None))
  write_run(root, "s2", config(1, 2), final(0.41, zero=1.0970 + 1e-7, sha=None))  # float noise
  text, _ = build_report(root)
  assert "TEST SETS DIFFER" in text and "zero_mse@L=10 = 1.0918): s0" in text
  assert "[test set T1: s1, s2]" in text


def test_one_test_set_gives_one_set_of_reference_rows(tmp_path):
  root = str(tmp_path)
  for seed in range(3):
    write_run(root, f"s{seed}", config(4, seed), final(0.25 + 0.001 * seed))
  text, _ = build_report(root)
  assert "TEST SETS DIFFER" not in text and "[test set" not in text
  assert "scored on one test set (sha256 aaaa)" in text
  assert "*1.101*" in row(text, "*zero predictor*")


def test_bimodal_seeds_give_the_fraction_that_left_the_plateau_and_each_mode(tmp_path):
  root = str(tmp_path)
  for seed, m in enumerate((0.250, 0.254, 0.406, 0.407, 0.409)):
    write_run(root, f"h2s{seed}", config(2, seed), final(m))
  for seed, m in enumerate((0.251, 0.252, 0.253)):
    write_run(root, f"h4s{seed}", config(4, seed), final(m))
  text, _ = build_report(root)
  h2 = row(text, "H=2")
  assert "left 0.252 ± " in h2 and "(n=2) / plateau 0.407 ± " in h2 and "(n=3)" in h2
  assert h2.rstrip(" |").endswith("2/5")
  assert "±" in row(text, "H=4") and "left" not in row(text, "H=4")
  assert row(text, "H=4").rstrip(" |").endswith("3/3")
  assert "(the 2 of 5 seeds that left the plateau): MSE@40 = 0.252 in [0.23, 0.26]: ok" in text
  assert icl_plateau.RULE in text


def test_plateau_split_is_for_bilinear_heads_only(tmp_path):
  """A variant without bilinear q·k heads (adaptive_filter) whose seeds spread across the
  threshold gets one mean over all seeds, not a left / plateau split."""
  root = str(tmp_path)
  for seed, m in enumerate((0.244, 0.245, 0.343)):
    write_run(root, f"afa{seed}", config(4, seed, "adaptive_filter", complex_dims=24), final(m))
  for seed, m in enumerate((0.251, 0.252, 0.406)):
    write_run(root, f"std{seed}", config(4, seed), final(m))
  text, _ = build_report(root)
  afa = row(text, "`adaptive_filter`")
  assert "left" not in afa and "0.277 ± " in afa and afa.rstrip(" |").endswith("—")
  assert "left 0.252 ± " in row(text, "`standard`")
  assert row(text, "`standard`").rstrip(" |").endswith("2/3")
  assert not icl_plateau.applies({"task": "icl_regression", "model.num_heads": 4,
                                  "attention.name": "enhanced_interactive"})
  assert icl_plateau.applies({"task": "icl_regression", "model.num_heads": 4,
                              "attention.name": "uniform_broadcast"})


def test_variants_are_paired_with_standard_by_seed(tmp_path):
  """Table A2's differences: per seed variant − standard, so a shift shared by the seeds is
  decided even when the seeds spread more than the shift."""
  root = str(tmp_path)
  for seed, m in enumerate((0.250, 0.256, 0.262)):
    write_run(root, f"std{seed}", config(4, seed), final(m))
    write_run(root, f"eit{seed}", config(4, seed, "enhanced_interactive"), final(m - 0.008))
    write_run(root, f"ub{seed}", config(4, seed, "uniform_broadcast"),
              final(m + (0.004, -0.004, 0.001)[seed]))
  write_run(root, "h1", config(1, 0, "enhanced_interactive"), final(0.40))  # no H=1 standard
  text, _ = build_report(root)
  section = text.split("### Variants against `standard`, paired by seed")[1].split("###")[0]
  eit = row(section, "`enhanced_interactive`, H=4 |")
  assert "-0.008 [-0.008, -0.008] (n=3)" in eit and eit.rstrip(" |").endswith("lower")
  assert row(section, "`uniform_broadcast`, H=4 |").rstrip(" |").endswith("not distinguishable")
  assert "H=1" not in section


def test_plateau_threshold_is_the_midpoint_of_the_closed_form_references():
  from attnlab.train.report.runs import RunRecord
  rec = RunRecord("r", {"task": "icl_regression", "data.n_context": 40, "model.num_heads": 2},
                  {}, [], {"final": True, **final(0.33)})
  assert icl_plateau.threshold(rec) == pytest.approx((0.415 + 0.248) / 2)
  assert icl_plateau.left_plateau(rec) is True  # 0.33 < 0.3315
  bare = RunRecord("r", {"task": "icl_regression", "model.num_heads": 2}, {}, [],
                   {"final": True, "mse@L=40": 0.33})
  assert icl_plateau.threshold(bare) == pytest.approx((0.409 + 0.244) / 2)
  garg = {"task": "icl_garg", "model.num_heads": 2, "data.d": 5}
  assert icl_plateau.applies(garg)  # Garg's own rule: below the averaging estimator at k = 2d
  for model, expected in ((0.64, True), (0.65, False)):
    rec = RunRecord("g", garg, {}, [], {"final": True, "nerr@k=10": model,
                                         "averaging_nerr@k=10": 0.645})
    assert icl_plateau.left_plateau(rec) is expected
  assert icl_plateau.left_plateau(RunRecord("g", garg, {}, [],
                                            {"final": True, "nerr@k=10": 0.3})) is None


def test_anisotropic_runs_leave_the_plateau_by_their_heads_cancelling():
  """Table A4: no closed-form threshold, so the heads decide (|Σμ| / Σ|μ| ≤ 0.1); the MSE is
  not read (a plateau-level MSE with cancelling heads still counts as left)."""
  from attnlab.train.report.runs import RunRecord
  cfg = {"task": "icl_regression", "model.num_heads": 2, "data.covariance": "anisotropic"}

  def rec(mu0, mu1, mse=0.40):
    return RunRecord("r", cfg, {}, [], {"final": True, "mse@L=40": mse, "omega@h=0": -0.2,
                                        "omega@h=1": 0.2, "mu@h=0": mu0, "mu@h=1": mu1})
  assert icl_plateau.applies(cfg)
  assert icl_plateau.left_plateau(rec(-2.0, 2.03)) is True
  assert icl_plateau.left_plateau(rec(-0.6, -0.8, mse=0.25)) is False
  assert icl_plateau.left_plateau(rec(-1.6, 0.8)) is False  # residual 0.33: in transit
  assert icl_plateau.left_plateau(RunRecord("r", cfg, {}, [], {"final": True})) is None


def test_per_head_columns_where_bilinear_and_the_reason_where_not(tmp_path):
  root = str(tmp_path)
  write_run(root, "std", config(4, 0), final(0.25, heads=[(0.01, 0.0), (-0.2, -1.5),
                                                          (0.21, 1.6), (-0.1, -0.1)]))
  write_run(root, "af", config(4, 0, "adaptive_filter", complex_dims=24), final(0.3))
  write_run(root, "eit", config(4, 0, "enhanced_interactive"), final(0.26))
  text, _ = build_report(root)
  assert "### Per-head scores" in text
  std = row(text, "`standard` | 0 | ")
  assert "+0.010 / −0.200 / +0.210 / −0.100" in std and "3 of 4" in std
  assert "n/a: its scores are precision-weighted residuals" in row(text, "`adaptive_filter` | 0 | ")
  assert "n/a: its per-head score maps are mixed" in row(text, "`enhanced_interactive` | 0 | ")


def ood_doc(seed, heads, bump=0.0, prompt_seed=20251215):
  mse = {"model": {}, "ridge": {}, "least_squares": {}, "dgd": {}, "gd": {}}
  for shift in ("isotropic", "scale=2"):
    for name in mse:
      base = 0.25 + bump if name == "model" else 0.11
      mse[name][shift] = {str(l): base for l in (10, 40, 160)}
  return {"task": "icl_regression", "seed": seed, "num_heads": heads, "n_prompts": 100,
          "prompt_seed": prompt_seed, "noise_var": 0.1, "d": 5, "prompts_sha256": "cafe",
          "shifts": ["isotropic", "scale=2"], "lengths": [10, 40, 160],
          "baselines": ["ridge", "least_squares", "dgd", "gd"], "mse": mse}


def test_report_has_table_a6_for_runs_with_ood_results(tmp_path):
  root = str(tmp_path)
  for seed in range(3):
    write_run(root, f"h4s{seed}", config(4, seed), final(0.25), ood_doc(seed, 4, 0.01 * seed))
  write_run(root, "h1s0", config(1, 0), final(0.40), ood_doc(0, 1, 0.1))
  write_run(root, "odd", config(1, 1), final(0.40), ood_doc(1, 1, prompt_seed=7))
  write_run(root, "noood", config(1, 2), final(0.40))
  text, plots = build_report(root)
  assert "table A6" in text
  assert "icl_regression_ood_mse_vs_L.png" in plots
  assert os.path.getsize(os.path.join(root, "icl_regression_ood_mse_vs_L.png")) > 0
  r = row(text, "`scale=2` | **H=4** (seeds 0,1,2)")
  assert "0.260 ± " in r and "(n=3)" in r
  assert "| `isotropic` | least squares | 0.110 | 0.110 | 0.110 |" in text
  assert "**LEFT OUT: evaluated on other prompts**" in text and "prompt seed 7" in text
  assert row(text, "`isotropic` | **H=1** (seeds 0)")


def test_a6_pairs_variants_with_standard_by_seed_under_each_shift(tmp_path):
  """A shift shared by the seeds is decided even where the seeds spread more than it."""
  root = str(tmp_path)
  for seed in range(3):
    base = 0.05 * seed
    write_run(root, f"std{seed}", config(4, seed), final(0.25), ood_doc(seed, 4, base))
    write_run(root, f"eit{seed}", config(4, seed, "enhanced_interactive"), final(0.24),
              ood_doc(seed, 4, base - 0.02))
  write_run(root, "h1", config(1, 0, "enhanced_interactive"), final(0.40), ood_doc(0, 1, 0.1))
  text, _ = build_report(root)
  section = text.split("### Variants against `standard` out of distribution")[1]
  r = row(section, "`scale=2` | `enhanced_interactive`, H=4 |")
  assert "-0.020 [-0.020, -0.020] (n=3)" in r and r.rstrip(" |").endswith("lower")
  assert "H=1" not in section


def test_b2_in_the_garg_report(tmp_path):
  root = str(tmp_path)
  for seed in range(2):
    cfg = {"task": "icl_garg", "seed": seed, "attention": {"name": "standard", "impl": "xla"},
           "data": {"d": 5, "n_points": 11}, "model": {"num_heads": 2}}
    fin = {f"nerr@k={k}": 0.5 for k in range(11)}
    fin.update({f"least_squares_nerr@k={k}": max(1 - k / 5, 0) for k in range(11)})
    nerr = {n: {s: {str(k): (None if s == "orthogonal_query" and k >= 5 else 0.3 + seed)
                    for k in range(11)} for s in ("standard", "orthogonal_query")}
            for n in ("model", "least_squares", "3nn", "averaging")}
    doc = {"task": "icl_garg", "seed": seed, "d": 5, "n_points": 11, "n_prompts": 64,
           "prompt_seed": 1, "prompts_sha256": "beef", "ks": list(range(11)),
           "shifts": ["standard", "orthogonal_query"],
           "baselines": ["least_squares", "3nn", "averaging"], "nerr": nerr}
    write_run(root, f"s{seed}", cfg, fin, doc)
  text, plots = build_report(root)
  assert "table B2" in text and "icl_garg_ood_nerr_vs_k.png" in plots and "| shift | predictor | k = 2 | k = 4 | k = 5 | k = 10 |" in text
  r = row(text, "`orthogonal_query` | **`standard`** (seeds 0,1)")
  assert r.split(" | ")[2].startswith("0.800 ± ") and r.split(" | ")[4] == "—"


def test_garg_seeds_on_both_sides_of_the_plateau_are_split(tmp_path):
  """A Garg run has left the plateau when its error at k = 2d is below the averaging
  estimator's on the same prompts; a variant whose seeds fall on both sides gets the fraction
  and each mode's mean in B1 and B2, one whose seeds all left gets one mean."""
  root = str(tmp_path)
  for name, errors in (("uniform_broadcast", (0.79, 0.78, 0.29)), ("standard", (0.13, 0.12, 0.09))):
    for seed, e in enumerate(errors):
      cfg = {"task": "icl_garg", "seed": seed, "attention": {"name": name, "impl": "xla"},
             "data": {"d": 5, "n_points": 11}, "model": {"num_heads": 2}}
      fin = {f"nerr@k={k}": e for k in range(11)}
      fin.update({f"averaging_nerr@k={k}": 0.645 for k in range(11)})
      nerr = {n: {"standard": {str(k): e + 0.01 for k in range(11)}}
              for n in ("model", "least_squares", "3nn", "averaging")}
      doc = {"task": "icl_garg", "seed": seed, "d": 5, "n_points": 11, "n_prompts": 64,
             "prompt_seed": 1, "prompts_sha256": "beef", "ks": list(range(11)),
             "shifts": ["standard"], "baselines": ["least_squares", "3nn", "averaging"],
             "nerr": nerr}
      write_run(root, f"{name}{seed}", cfg, fin, doc)
  text, _ = build_report(root)
  ub = row(text, "`uniform_broadcast` |")
  assert ub.split(" | ")[1] == "1/3"
  assert "left 0.290 (n=1) / plateau 0.785 ± " in ub
  std = row(text, "`standard` |")
  assert std.split(" | ")[1] == "3/3" and "left" not in std
  b2 = row(text, "`standard` | **`uniform_broadcast`**")
  assert "left the plateau: 1/3" in b2 and "left 0.300 (n=1) / plateau 0.795 ± " in b2
  assert icl_plateau.GARG_RULE in text
  side = text.split("every shift side by side")[1]
  assert "`uniform_broadcast` (left: 1/3)" in side
  cells = row(side, "`standard` |").split(" | ")
  assert cells[1].startswith("0.123 ± ") and cells[2].startswith("left 0.300 (n=1) / plateau ")
  assert all(c.strip(" |").startswith("*") for c in cells[3:])  # the three baselines


def test_fingerprint_depends_on_the_values_and_names():
  a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
  assert testsets.fingerprint(a) == testsets.fingerprint({"x": a["x"].copy()})
  assert testsets.fingerprint(a) != testsets.fingerprint({"x": a["x"] + 1})
  assert testsets.fingerprint(a) != testsets.fingerprint({"y": a["x"]})


def test_icl_regression_test_set_is_independent_of_the_training_seed():
  from attnlab.train import settings
  from attnlab.train.config_loading import get_config
  from attnlab.train.tasks import icl_regression
  fps = []
  for seed in (0, 5):
    cd = get_config("icl_regression:heads=2,runlocal",
                    {"seed": str(seed), "eval.prompts": "50", "eval.lengths": "(10,40)"})
    task = icl_regression.Task(settings.from_config(cd))
    fps.append(task.test_set_fingerprint())
    info = task.describe()["test_set"]
    assert info["seed"] == icl_regression.TEST_SEED and info["prompts"] == 50
  assert fps[0] == fps[1]


@pytest.mark.parametrize("name,expected", [
    ("a1.py", 3 + 5 + 3 + 3), ("a3.py", 5 + 3 + 3 + 3), ("a4.py", 5 + 3), ("a5.py", 5 + 3 + 5 + 5)])
def test_sweeps_have_three_seeds_and_five_where_seeds_split(name, expected):
  """Three seeds a setting, five where the seeds end in different solutions (H = 2; in table A5
  also H = 4 and 6, whose seeds end with different numbers of shared heads)."""
  runs = sweep.expand(os.path.join(ROOT, "experiments", "icl_regression", name))
  assert len(runs) == expected


def test_a2_h4_sweep_iterates_over_the_registrys_mechanisms(capsys):
  from attnlab.models.attention import registry
  runs = sweep.expand(os.path.join(ROOT, "experiments", "icl_regression", "a2_h4.py"))
  names = {dict(r.overrides).get("model.num_heads") for r in runs}
  assert names == {"4"}
  variants = {r.spec.split("attention=")[1].split(",")[0] for r in runs}
  err = capsys.readouterr().err
  for name in registry.mechanisms():
    assert name in variants or f"{name} left out: " in err
  assert not {n for n, c in registry.REGISTRY.items() if c.is_control} & variants
  assert "relational left out" in err  # width 6 is not divisible by 4
  assert len(runs) == 3 * len(variants)
  a6 = sweep.expand(os.path.join(ROOT, "experiments", "icl_regression", "a6.py"))
  heads = [dict(r.overrides)["model.num_heads"] for r in a6 if "attention=" not in r.spec]
  assert sorted(set(heads)) == ["1", "2", "4", "8"] and heads.count("2") == 5


def test_a6_compares_only_the_prompt_fields_both_files_have(tmp_path):
  """An ood.json from before the fingerprint (no d, no prompts_sha256) joins newer ones."""
  root = str(tmp_path)
  old = ood_doc(0, 4)
  del old["d"], old["prompts_sha256"]
  write_run(root, "old", config(4, 0), final(0.25), old)
  write_run(root, "new", config(4, 1), final(0.25), ood_doc(1, 4))
  text, _ = build_report(root)
  assert "LEFT OUT" not in text and "(seeds 0,1)" in text
