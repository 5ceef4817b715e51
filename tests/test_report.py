"""Reports of run folders (engine/report/ and `python -m engine report`) on small synthetic
runs written in the engine's format: search.json, one folder per trial with params.json,
result.json (JSON lines, Tune's fields and ours), error.txt, and finished.json once the search
ended. The paper numbers here are made up for the test."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import report
from models.config import Config

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
UT = "UT-VAE*-full-Σ"  # a label with characters LaTeX and file names trip on
# (label, config fields): two rows share the label VAE and differ in beta; V before U, so the
# row order is neither alphabetical nor grouped by label
ROWS = [("VAE", {"beta": 1.0}),
        (UT, {"posterior": "full", "sampling": "unscented", "regularizer": "wasserstein",
              "beta": 2.5e-4}),
        ("VAE", {"beta": 0.5})]
# (row, seed, kind, test/mse): what each trial did
TRIALS = [(0, 0, "completed", 0.010), (0, 1, "completed", 0.012), (0, 2, "completed", 0.017),
          (1, 0, "completed", 0.008), (1, 1, "diverged", None), (1, 2, "error", None),
          (2, 0, "completed", 0.020), (2, 1, "running", None), (2, 2, "no result", None)]
PAPER = {"source": "UAE Table 2 (FID, lower is better)", "setting": {"latent_dim": 16},
         "numbers": {"fashion": {"VAE": {"eval/fid_rec": 47.38, "eval/fid_sample_gmm10": 51.74},
                                 UT: {"eval/fid_rec": 39.5, "eval/fid_sample_gmm10": 44.25}},
                     "cifar10": {"VAE": {"eval/fid_rec": 91.0}}}}


def make_run(tmp_path: Path, *, trials=TRIALS, rows=ROWS, dataset="digits", finished=False,
             paper=None, fid=False) -> Path:
    """A run folder as the engine writes it."""
    run = tmp_path / "run"
    run.mkdir()
    configs = [Config(name=label, **fields).to_dict() for label, fields in rows]
    (run / "search.json").write_text(json.dumps({
        "name": "ablation_test", "title": "Test ablation", "dataset": dataset, "epochs": EPOCHS,
        "seeds": [0, 1, 2], "metric": "val/mse", "mode": "min",
        "rows": [{"label": label, "config": c} for (label, _), c in zip(rows, configs)],
        "table_metrics": ["test/mse", "test/psnr"], "paper": paper}))
    for k, (row, seed, kind, test_mse) in enumerate(trials):
        # folder names sort against the row order, as Tune's trial names may
        folder = run / f"train_fn_{(7 * k) % 10 + 10 * (k // 10):05d}_seed={seed}"
        (folder / "checkpoint_000000").mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({
            "label": rows[row][0], "config": configs[row], "seed": seed, "dataset": dataset,
            "epochs": EPOCHS, "git_commit": "abc123"}))
        if kind == "no result":
            continue
        last = {"completed": EPOCHS, "diverged": 2, "error": 1, "running": 2}[kind]
        lines = [_line(k, epoch, seed, "running") for epoch in range(1, last + 1)]
        if kind == "completed":
            lines[-1].update(status="completed", **{"test/mse": test_mse,
                                                     "test/psnr": -10 * math.log10(test_mse)})
            if fid:
                lines[-1]["eval/fid_rec"] = 30.0 + 1000 * test_mse
        if kind == "diverged":
            lines[-1].update(status="diverged", diverged_at_epoch=2, **{"train/recon": math.nan})
        text = "".join(json.dumps(line) + "\n" for line in lines)  # json writes NaN as NaN
        if kind == "running":
            text += '{"epoch": 3, "val/ms'  # a line being written right now
        (folder / "result.json").write_text(text)
        if kind == "error":
            (folder / "error.txt").write_text(
                "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                "ValueError: boom at epoch 2\n\n")
    if finished:
        (run / "finished.json").write_text("{}")
    return run


def _line(k: int, epoch: int, seed: int, status: str) -> dict:
    val = 0.05 / epoch + 0.001 * seed
    return {"training_iteration": epoch, "trial_id": f"t{k:05d}", "time_total_s": 1.5 * epoch,
            "time_this_iter_s": 1.5, "done": False, "timestamp": 1_700_000_000 + epoch,
            "config": {"seed": seed}, "hostname": "node", "epoch": epoch, "status": status,
            "train/loss": 1.0 / epoch, "train/recon": 0.9 / epoch,
            "train/latent_reg": None if epoch == 1 else 0.1, "val/mse": val,
            "val/psnr": -10 * math.log10(val), "time/epoch_s": 1.5}


def _search(run: Path) -> dict:
    return json.loads((run / "search.json").read_text())


def test_status_epochs_and_errors_of_a_partial_run(tmp_path):
    run = make_run(tmp_path)
    trials = report.load_trials(run)
    assert list(trials.trial) != sorted(trials.trial)  # the order below is not the folders'
    got = list(zip(trials.label, trials["config/beta"], trials.seed, trials.status,
                   trials.epochs_done))
    assert got == [("VAE", 1.0, 0, "completed", 3), ("VAE", 1.0, 1, "completed", 3),
                   ("VAE", 1.0, 2, "completed", 3), (UT, 2.5e-4, 0, "completed", 3),
                   (UT, 2.5e-4, 1, "diverged", 2), (UT, 2.5e-4, 2, "error", 1),
                   ("VAE", 0.5, 0, "completed", 3), ("VAE", 0.5, 1, "unfinished", 2),
                   ("VAE", 0.5, 2, "unfinished", 0)]
    assert trials.error[5] == "ValueError: boom at epoch 2"
    assert trials.error.drop(index=5).isna().all()
    assert trials["test/mse"][1] == 0.012 and trials["diverged_at_epoch"][4] == 2
    assert np.isnan(trials["train/recon"][4])  # the NaN token
    assert trials["time_total_s"][0] == 4.5 and trials["trial_id"][0].startswith("t")
    assert {f"config/{k}" for k in Config().to_dict()} <= set(trials.columns)
    assert "config/seed" not in trials.columns and "hostname" not in trials.columns


def test_only_trials_the_scheduler_stopped_are_stopped_early(tmp_path):
    """A trial that ended before its budget is "stopped early" only where the scheduler
    said so (its stopped.json, engine/ray_backend); an interrupted search's trials stay
    "unfinished" even once finished.json exists."""
    run = make_run(tmp_path, finished=True)
    trials = report.load_trials(run)
    assert list(trials.status[6:]) == ["completed", "unfinished", "unfinished"]
    assert list(trials.status[3:6]) == ["completed", "diverged", "error"]
    (run / trials.trial[7] / "stopped.json").write_text('{"by": "ASHAScheduler"}')
    assert list(report.load_trials(run).status[6:]) == ["completed", "stopped early",
                                                         "unfinished"]


def test_curves_are_long_and_keep_every_epoch(tmp_path):
    curves = report.load_curves(make_run(tmp_path))
    assert list(curves.columns) == ["trial", "label", "seed", "epoch", "metric", "value"]
    vae0 = curves[(curves.label == "VAE") & (curves.seed == 0) & (curves.metric == "val/mse")]
    assert len(vae0) == 2 * EPOCHS  # both VAE rows' seed 0
    assert sorted(vae0.value) == pytest.approx(sorted(2 * [0.05, 0.025, 0.05 / 3]))
    assert set(curves.metric) >= {"train/loss", "val/psnr", "time/epoch_s", "test/mse"}
    diverged = curves[(curves.label == UT) & (curves.seed == 1) & (curves.metric == "train/recon")]
    assert np.isnan(diverged.value.iloc[-1])


def test_table_mean_std_and_counts_per_configuration(tmp_path):
    run = make_run(tmp_path)
    table = report.ablation_table(report.load_trials(run), _search(run))
    assert list(table.index) == ["VAE (beta=1)", UT, "VAE (beta=0.5)"]  # the search's order
    vae = [0.010, 0.012, 0.017]
    assert table.loc["VAE (beta=1)", "test/mse mean"] == pytest.approx(np.mean(vae))
    assert table.loc["VAE (beta=1)", "test/mse std"] == pytest.approx(np.std(vae, ddof=1))
    psnr = [-10 * math.log10(v) for v in vae]
    assert table.loc["VAE (beta=1)", "test/psnr std"] == pytest.approx(np.std(psnr, ddof=1))
    counts = table[["n", "diverged", "stopped early", "errors", "unfinished"]]
    assert counts.values.tolist() == [[3, 0, 0, 0, 0], [1, 1, 0, 1, 0], [1, 0, 0, 0, 2]]
    assert table.loc[UT, "test/mse mean"] == 0.008 and np.isnan(table.loc[UT, "test/mse std"])
    assert not any(c.endswith("(paper)") for c in table.columns)

    shown = report.format_table(table)
    assert shown.columns.names == ["dataset", "metric"]
    # the 95% t interval's half-width, 4.303 · 0.0036055 / √3 = 0.00896 (scipy's own
    # interval of the seeds), rounded to one digit; the mean 0.013 to one more
    from scipy.stats import t as student_t
    low, high = student_t.interval(0.95, 2, loc=np.mean(vae), scale=np.std(vae, ddof=1) / 3 ** .5)
    assert round((high - low) / 2, 3) == 0.009
    assert table.loc["VAE (beta=1)", "test/mse ci95"] == pytest.approx((high - low) / 2)
    assert shown.loc["VAE (beta=1)", ("digits", "MSE ↓")] == "0.0130 ± 0.009"
    assert shown.loc[UT, ("digits", "MSE ↓")] == "0.008000 (n=1)"  # 4 significant digits
    assert ("trials", "stopped early") not in shown.columns  # all zero: not shown


def test_paper_numbers_stand_beside_ours_when_dataset_and_setting_match(tmp_path):
    run = make_run(tmp_path, dataset="fashion", paper=PAPER, fid=True)
    table = report.ablation_table(report.load_trials(run), _search(run))
    assert table["eval/fid_rec (paper)"].tolist() == [47.38, 39.5, 47.38]
    assert table.loc[UT, "eval/fid_rec mean"] == pytest.approx(38.0)
    assert "eval/fid_sample_gmm10 (paper)" not in table and "test/mse (paper)" not in table
    notes = " ".join(table.attrs["notes"])
    assert "the paper's eval/fid_sample_gmm10 is not computed in this run" in notes
    cols = list(report.format_table(table).columns)
    ours = cols.index(("fashion", "FID (rec.) ↓"))
    assert cols[ours + 1] == ("fashion", "FID (rec.) ↓ (paper)")


def test_no_paper_numbers_on_another_dataset(tmp_path):
    run = make_run(tmp_path, dataset="digits", paper=PAPER, fid=True)
    table = report.ablation_table(report.load_trials(run), _search(run))
    assert not any(c.endswith("(paper)") for c in table.columns)
    assert any("reports fashion, cifar10; this run is on digits, so no published numbers" in n
               for n in table.attrs["notes"])


def test_no_paper_numbers_when_a_row_is_off_the_papers_setting(tmp_path):
    paper = {**PAPER, "setting": {"latent_dim": 32}}
    run = make_run(tmp_path, dataset="fashion", paper=paper, fid=True)
    table = report.ablation_table(report.load_trials(run), _search(run))
    assert not any(c.endswith("(paper)") for c in table.columns)
    assert any("latent_dim=32" in n and "VAE has latent_dim=16" in n for n in table.attrs["notes"])


def test_write_report_writes_every_file_atomically_and_round_trips(tmp_path):
    run = make_run(tmp_path)
    text = report.write_report(run)
    out = run / "report"
    assert sorted(os.listdir(out)) == sorted(report.REPORT_FILES)  # no temp files left
    table = report.ablation_table(report.load_trials(run), _search(run))
    back = pd.read_csv(out / "table.csv", index_col=0)
    assert list(back.index) == list(table.index)
    pd.testing.assert_series_equal(back["test/mse mean"], table["test/mse mean"])
    assert back["n"].tolist() == [3, 1, 1]
    assert len(pd.read_parquet(out / "trials.parquet")) == len(TRIALS)
    assert len(pd.read_csv(out / "trials.csv")) == len(TRIALS)
    for png in ("val_curves.png", "final_bar.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    tex = (out / "table.tex").read_text()
    assert tex.isascii() and r"UT-VAE{*}-full-$\Sigma$" in tex and r"MSE $\downarrow$" in tex
    assert re.search(r"(?<!\\)[_#]", tex) is None and r"$\pm$" in tex
    assert all(line.startswith("%") for line in tex.splitlines() if re.search(r"(?<!\\)%", line))
    md = (out / "table.md").read_text()
    assert "VAE (beta=1)" in md and "±" in md and "95% confidence interval" in md
    assert text.splitlines()[0].startswith("Test ablation (ablation_test): digits")
    assert "error in UT-VAE*-full-Σ seed 2: ValueError: boom at epoch 2" in text
    assert "9 (5 completed, 1 diverged, 1 error, 2 unfinished)" in text
    report.write_report(run)  # again, over the files of the first report
    assert sorted(os.listdir(out)) == sorted(report.REPORT_FILES)


def test_a_run_with_no_completed_trial_reports_dashes_and_why(tmp_path):
    trials = [(0, 0, "running", None), (1, 0, "error", None), (1, 1, "no result", None)]
    run = make_run(tmp_path, trials=trials)
    text = report.write_report(run)
    shown = report.format_table(report.ablation_table(report.load_trials(run), _search(run)))
    assert (shown[[c for c in shown.columns if c[0] == "digits"]] == "—").all().all()
    assert "no trial has completed yet (1 error, 2 unfinished)" in text
    assert "no trial of VAE (beta=0.5) has started" in text  # the row without a folder
    assert (run / "report" / "final_bar.png").is_file()


def test_a_run_with_no_trial_folder_yet(tmp_path):
    run = make_run(tmp_path, trials=[])
    text = report.write_report(run)
    assert "trials: 0 (no trials)" in text
    assert len(pd.read_csv(run / "report" / "table.csv")) == len(ROWS)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_rejects_a_folder_without_search_json(tmp_path):
    done = _cli("report", str(tmp_path))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {tmp_path} is not a run folder (no search.json); ")


def test_cli_prints_the_table_of_a_run(tmp_path):
    run = make_run(tmp_path, finished=True)
    done = _cli("report", str(run))
    assert done.returncode == 0, done.stderr
    assert "| VAE (beta=0.5)" in done.stdout and "search finished" in done.stdout
    assert (run / "report" / "table.md").is_file()


def test_report_imports_neither_ray_nor_torch():
    code = "import sys, engine.report; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_trials_off_the_search_rows_are_kept_apart_with_a_note(tmp_path):
    trials = [(2, 0, "completed", 0.02), (0, 0, "completed", 0.01), (0, 1, "completed", 0.03)]
    run = make_run(tmp_path, trials=trials)
    for folder in (p for p in run.iterdir() if (p / "params.json").is_file()):
        params = json.loads((folder / "params.json").read_text())
        if params["config"]["beta"] == 1.0 and params["seed"] == 0:
            params["config"]["lr"] = 0.01  # sampled by the search, or the row was edited
        elif params["config"]["beta"] == 1.0:
            params["label"] = "AE"  # a row that search.json does not have
        (folder / "params.json").write_text(json.dumps(params))
    table = report.ablation_table(report.load_trials(run), _search(run))
    assert list(table.index) == ["VAE (beta=1, lr=0.01)", UT, "VAE (beta=0.5, lr=0.001)", "AE"]
    assert table["n"].tolist() == [1, 0, 1, 1]
    notes = table.attrs["notes"]
    assert "AE: no row of search.json has this label; listed last." in notes
    assert any(n.startswith("1 configuration of VAE differs from its row") for n in notes)
    assert any(n.startswith(f"no trial of {UT} has started") for n in notes)


# --- convergence: whether a completed trial's curves had flattened ---

def _curve(values: dict[str, list[float]]) -> list[dict]:
    n = len(next(iter(values.values())))
    return [{"epoch": e + 1, **{k: v[e] for k, v in values.items()}} for e in range(n)]


MIN = {"metric": "val/mse", "mode": "min"}


@pytest.mark.parametrize("values, search, moving", [
    # 10 epochs: the window is the last epoch against the one before it
    ({"val/mse": [1 + 0.5 ** e for e in range(1, 11)]}, MIN, {}),  # (2^-9 - 2^-10) / 1.001
    ({"val/mse": [1 / e for e in range(1, 11)]}, MIN, {"val/mse": (1 / 9 - 1 / 10) / (1 / 10)}),
    ({"val/mse": [1 + e / 100 for e in range(10)]}, MIN, {}),  # getting worse is not improving
    ({"val/psnr": [10 + e for e in range(10)]}, {"metric": "val/psnr", "mode": "max"},
     {"val/psnr": 1 / 19}),
    # 20 epochs: the mean of epochs 19-20 against 17-18; a decoder variance moving either way
    ({"val/mse": [0.5] * 20, "train/sigma_x2": [2.0 ** -e for e in range(1, 21)]}, MIN,
     {"train/sigma_x2": (2 ** -17 + 2 ** -18 - 2 ** -19 - 2 ** -20) / (2 ** -19 + 2 ** -20)}),
    ({"val/mse": [0.5] * 20, "train/sigma_x2": [1 + e / 1000 for e in range(20)]}, MIN, {}),
    ({"val/mse": [0.5] * 20, "train/sigma_x2": [0.1 * 1.05 ** e for e in range(20)]}, MIN,
     {"train/sigma_x2": 1 - 1.05 ** -2}),
])
def test_a_trial_has_converged_when_its_last_tenth_of_epochs_no_longer_moves(values, search,
                                                                           moving):
    got = report.read.converged(_curve(values), search)
    assert got["converged"] is (not moving)
    found = json.loads(got["still_moving"]) if got["still_moving"] else {}
    assert found.keys() == moving.keys()
    for name, change in moving.items():
        assert found[name] == pytest.approx(change, abs=1e-4)


def test_convergence_is_unknown_with_one_epoch_or_no_metric():
    assert report.read.converged(_curve({"val/mse": [0.1]}), MIN)["converged"] is None
    assert report.read.converged(_curve({"train/loss": [3.0, 2.0]}), MIN)["converged"] is None


def test_a_restored_epochs_later_line_counts_for_convergence():
    lines = _curve({"val/mse": [1.0, 0.5, 0.25]}) + [{"epoch": 3, "val/mse": 0.499}]
    assert report.read.converged(lines, MIN)["converged"] is True


def test_the_table_counts_and_a_note_names_the_rows_that_had_not_converged(tmp_path):
    run = make_run(tmp_path, finished=True)  # val/mse = 0.05 / epoch: still falling at epoch 3
    flat = next(f for f in run.glob("*/params.json")
                if (json.loads(f.read_text())["label"], json.loads(f.read_text())["seed"])
                == (UT, 0))
    lines = [json.loads(t) for t in (flat.parent / "result.json").read_text().splitlines()]
    for line in lines:
        line["val/mse"] = 0.02  # UT-VAE*-full-Σ's completed seed 0 has flattened
    (flat.parent / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    trials = report.load_trials(run)
    done = trials[trials.status == "completed"]
    assert (done.converged == (done.label == UT)).all()
    assert trials[trials.status != "completed"].converged.isna().all()  # unknown, not False
    table = report.ablation_table(trials, _search(run))
    assert list(table[report.NOT_CONVERGED]) == [3, 0, 1]
    [note] = [n for n in table.attrs["notes"] if n.startswith("not converged")]
    # val/mse = 0.05/3 + 0.001 seed against 0.05/2 + 0.001 seed: (0.025 - 0.01667) / last
    low, high = [(0.05 / 2 - 0.05 / 3) / (0.05 / 3 + 0.001 * s) for s in (2, 0)]
    assert f"VAE (beta=1), 3 of 3 seeds, val/mse by {100 * low:.2g}–{100 * high:.2g}%" in note
    assert "VAE (beta=0.5), 1 of 1 seed, val/mse by 50%" in note and UT not in note
    shown = report.format_table(table)
    assert list(shown[("trials", report.NOT_CONVERGED)]) == ["3", "0", "1"]


def test_a_study_that_stops_early_counts_a_trial_past_its_best_as_converged(tmp_path):
    """search.json's early_stopping: a completed trial whose val/mse rose from its best while
    its decoder variance still moved is converged (the rule that ended it), the note names it
    with its epoch, and the title says so; the same lines without it are not converged."""
    run = make_run(tmp_path, finished=True)
    folder = next(f.parent for f in run.glob("*/params.json")
                  if (json.loads(f.read_text())["label"], json.loads(f.read_text())["seed"])
                  == (UT, 0))
    lines = [json.loads(t) for t in (folder / "result.json").read_text().splitlines()]
    for line, mse, sigma in zip(lines, (0.02, 0.01, 0.03), (1.0, 0.5, 0.25)):
        line.update({"val/mse": mse, "train/sigma_x2": sigma})
    lines[-1]["end_reason"] = "past its best at epoch 3 (val/mse: ...)"
    (folder / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    saved = json.loads((run / "search.json").read_text())
    for early in (False, True):
        (run / "search.json").write_text(json.dumps(
            {**saved, "budget": "auto", "min_epochs": 2, "early_stopping": early}))
        trials = report.load_trials(run)
        mark = trials.loc[(trials.label == UT) & (trials.seed == 0), "converged"].item()
        assert mark is early
        table = report.ablation_table(trials, _search(run))
        [note] = [n for n in table.attrs["notes"] if n.startswith("stopped past their best")]
        assert f"{UT}, 1 of " in note and "(epoch 3)" in note
        text = report.write_report(run)
        assert ("each trial to its plateau or past its best" in text) is early


def test_a_note_names_the_rows_that_run_a_preset_of_another_name(tmp_path):
    """A row labelled as the paper's row but running another preset (e.g. its code's reading)
    is named in one note with its preset; rows whose preset is their label are not."""
    run = make_run(tmp_path, finished=True)
    saved = json.loads((run / "search.json").read_text())
    saved["rows"][1]["preset"] = f"{UT}-code"
    (run / "search.json").write_text(json.dumps(saved))
    table = report.ablation_table(report.load_trials(run), _search(run))
    [note] = [n for n in table.attrs["notes"] if "preset of another name" in n]
    assert note.endswith(f": {UT} runs {UT}-code.") and note.count(" runs ") == 1
    # without any such row, no note
    (tmp_path / "plain").mkdir()
    other = make_run(tmp_path / "plain", finished=True)
    plain = report.ablation_table(report.load_trials(other), _search(other))
    assert not [n for n in plain.attrs["notes"] if "preset of another name" in n]


def test_values_are_rounded_to_the_precision_of_their_spread():
    from engine.report.display import cell
    assert cell(0.01471, 0.0005977, 3) == "0.01471 ± 0.0006"  # the example
    assert cell(0.01471, 0.00149, 3) == "0.01471 ± 0.0015"  # a spread that begins with 1: two
    assert cell(0.0123, 0.0096, 3) == "0.0123 ± 0.010"  # 0.0096 rounds up to a leading 1
    assert cell(47.38, 3.2, 3) == "47.4 ± 3" and cell(47.38, 35.0, 3) == "47 ± 40"
    assert cell(2.0, 0.0, 3) == "2.000 ± 0" and cell(0.5, float("nan"), 1) == "0.5000 (n=1)"
    assert cell(float("nan"), float("nan"), 0) == "—"
    # large values (KID in the classifier's features) in powers of ten, rounded the same way
    assert cell(4.521e7, 1.645e7, 3) == "4.5e7 ± 2e7"
    assert cell(1.127e8, 1.258e7, 3) == "1.127e8 ± 0.13e8"
    for mean, std in [(0.01471, 0.0005977), (123.456, 0.0421), (0.9871, 0.0123),
                      (4.521e7, 2.645e7), (1.127e8, 1.258e7)]:
        shown_mean, shown_std = (float(x) for x in cell(mean, std, 3).split(" ± "))
        # the spread to one significant digit (two from a leading 1), the mean one digit more
        first = f"{std:e}"[0]
        assert shown_std == float(f"{std:.{1 if first == '1' else 0}e}")
        assert abs(shown_mean - mean) <= 0.05 * shown_std + 1e-12


def test_metrics_have_display_names_with_units_and_the_better_direction():
    from engine.report.display import metric_name
    assert metric_name("eval/fid_rec") == ("FID (rec.) ↓", "↓")
    assert metric_name("eval/fid_sample_gmm10") == ("FID (GMM-10) ↓", "↓")
    assert metric_name("eval/fid_sample_second_stage")[0] == "FID (2nd stage) ↓"
    assert metric_name("eval/recall_interp_mid") == ("recall (interp. mid) ↑", "↑")
    assert metric_name("eval/kid_rec") == ("KID (rec.) ↓", "↓")
    assert metric_name("eval/kid_std_sample_gmm10") == ("KID s.d. (GMM-10)", None)
    assert metric_name("test/psnr") == ("PSNR (dB) ↑", "↑")
    assert metric_name("val/mse") == ("val. MSE ↓", "↓")
    assert metric_name("eval/latent_var") == ("latent variance", None)  # a property: no best
    assert metric_name("eval/sigma_x2_SU") == ("σx² (SU)", None)  # a noise pattern's cell
    assert metric_name("eval/takida_gap") == ("eval/takida_gap", None)  # unknown: as it is


def test_the_best_of_a_column_is_marked_with_every_row_the_seeds_cannot_tell_from_it():
    from scipy.stats import ttest_ind
    from engine.report.display import LOWER, best_rows
    rng = np.random.default_rng(0)
    seeds = {"A": rng.normal(1.00, 0.02, 5), "B": rng.normal(1.01, 0.02, 5),
             "C": rng.normal(1.20, 0.02, 5), "D": rng.normal(1.03, 0.2, 4),
             "E": np.array([0.9])}  # one seed: no spread, not testable
    mean = pd.Series({k: v.mean() for k, v in seeds.items()})
    std = pd.Series({k: v.std(ddof=1) if len(v) > 1 else np.nan for k, v in seeds.items()})
    n = pd.Series({k: len(v) for k, v in seeds.items()})
    marked = best_rows(mean, std, n, LOWER)
    # the best is E (one seed): nothing can be tested against it
    assert marked == {"E"}
    without = [k for k in seeds if k != "E"]
    marked = best_rows(mean[without], std[without], n[without], LOWER)
    best = mean[without].idxmin()
    # Welch's test on the seeds themselves, Holm by hand over the 6 pairs: independent
    pairs = [(a, b) for i, a in enumerate(without) for b in without[i + 1:]]
    p = {pair: ttest_ind(seeds[pair[0]], seeds[pair[1]], equal_var=False).pvalue
         for pair in pairs}
    differ, still = set(), True
    for k, pair in enumerate(sorted(pairs, key=p.get)):
        still = still and p[pair] < 0.05 / (len(pairs) - k)
        if still:
            differ.add(frozenset(pair))
    # down the means, every row until the first that Holm tells from the best
    want = set()
    for k in sorted(without, key=mean.get):
        if frozenset((best, k)) in differ:
            break
        want.add(k)
    assert marked == want and len(marked) >= 2  # D, the best, has too wide a spread to tell
    assert best_rows(mean, std, n, None) == set()  # no direction: nothing is best


def test_the_markdown_and_latex_tables_set_each_columns_best_in_bold(tmp_path):
    run = make_run(tmp_path)
    report.write_report(run)
    md = (run / "report" / "table.md").read_text()
    tex = (run / "report" / "table.tex").read_text()
    # UT-VAE*-full-Σ has the lowest MSE (0.008) and so the highest PSNR, one seed: only it
    [ut] = [line for line in md.splitlines() if line.startswith(f"| {UT}")]
    assert ut.count("**") == 4 and "**0.008000 (n=1)**" in ut
    assert "**" not in "".join(line for line in md.splitlines() if line.startswith("| VAE"))
    # bold as siunitx reads it in an S column (detect-weight): \bfseries before the number
    assert r"\bfseries 0.008000" in tex and r"\bfseries 20.97" in tex
    assert "bold: the best mean of each column" in md and "Welch" in md


# siunitx's input in an S column: a number, bold or not, the ± half-width's with its sign,
# a braced text, or nothing
_SI_CELL = re.compile(r"^(\\bfseries )?(\\pm )?-?\d+(\.\d+)?(e[+-]?\d+)?$|^\{.*\}$|^$")


def _tabular(tex: str) -> tuple[list[str], list[list[str]]]:
    """(each column's spec: "l", "c", "S[...]"; the body's rows as lists of cells)."""
    spec = re.search(r"\\begin\{tabular\}\{(.*)\}\n", tex)[1]
    specs = re.findall(r"S\[[^\]]*\]|[lc]", re.sub(r"@\{[^}]*\}", "", spec))
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    return specs, [[c.strip() for c in re.split(r"(?<!\\)&", line.strip().removesuffix("\\\\"))]
                   for line in body.strip().splitlines()]


def _cells() -> pd.DataFrame:
    """format_table's columns with every kind of cell display.cell writes, bold and not: a
    mean ± interval with letters, one seed, none completed ("—"), no interval for n > 1,
    powers of ten, a negative mean, and a value that is no number (inf)."""
    from engine.report.display import cell
    cells = [cell(0.014712, 0.00062, 3) + " ab", cell(0.008, math.nan, 1),
             cell(math.nan, math.nan, 0), cell(12.5, math.nan, 3), cell(2.5e6, 3.1e5, 3),
             cell(-3.52, 0.21, 3) + " a", cell(math.inf, 0.1, 3)]
    shown = pd.DataFrame({("digits", "MSE ↓"): cells,
                          ("digits", "FID (paper)"): ["47.38", "", "1e-05", "", "", "", ""],
                          ("trials", "n"): ["3", "1", "0", "3", "3", "3", ""]},
                         index=[f"{UT} {k}" for k in range(len(cells))])
    shown.attrs["bold"] = {(0, 0), (1, 0), (5, 0)}
    return shown


def test_the_latex_table_sets_numbers_in_siunitx_columns_aligned_on_their_points(tmp_path):
    """Every number in an S column (siunitx aligns the decimal points, bold or not): a mean's
    column, its ± half-width's beside it, its letters and "(n=1)" as text after; a cell that
    is no number braced, so that siunitx reads it as text; no hand-made boxes."""
    run = make_run(tmp_path)
    shown = report.format_table(report.ablation_table(report.load_trials(run), _search(run)))
    for tex in (report.formats.latex_table(shown, []), report.formats.latex_table(_cells(), [])):
        assert tex.startswith("% needs \\usepackage{booktabs,siunitx,graphicx}")
        assert "\\sisetup{detect-weight, mode=text" in tex and "\\makebox" not in tex
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
        specs, rows = _tabular(tex)
        assert all(len(row) == len(specs) for row in rows)
        numeric = [k for k, s in enumerate(specs) if s.startswith("S[")]
        assert len(numeric) >= 3
        for row in rows:
            for k in numeric:
                assert _SI_CELL.match(row[k].strip()), (specs[k], row[k])
    specs, rows = _tabular(report.formats.latex_table(_cells(), []))
    mean, spread, after = rows[0][1:4]
    assert (mean, spread, after) == (r"\bfseries 0.01471", r"\bfseries \pm 0.0006",
                                     r"\textsuperscript{ab}")  # the letters not bold
    # room for the widest integer part, fraction, sign and power of ten in each column
    assert specs[1:3] == ["S[table-format=-2.6e1]", r"S[table-format=\pm1.4e1]"]
    assert [row[1] for row in rows[1:3]] == [r"\bfseries 0.008000", "{---}"]
    assert rows[2][2] == "" and rows[3][2] == r"{$\pm$ --}" and rows[1][3] == "(n=1)"
    assert rows[6][1].startswith("{inf")  # no number: text, braced


def test_the_latex_table_is_a_float_for_a_column_or_across_the_page(tmp_path):
    """A table whose rows fit a column of a two-column page is a `table`, a wider one a
    `table*`; either is scaled down to the line only where it is still wider, and carries
    its caption and label."""
    run = make_run(tmp_path)
    shown = report.format_table(report.ablation_table(report.load_trials(run), _search(run)))
    wide = report.formats.latex_table(shown, [], "Test ablation (ablation_test)",
                                      "tab:ablation_test")
    assert "\\begin{table*}" in wide and wide.rstrip().endswith("\\end{table*}")
    assert "\\caption{Test ablation (ablation\\_test)}" in wide
    assert "\\label{tab:ablation-test}" in wide
    assert "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{" in wide
    narrow = report.formats.latex_table(shown.iloc[:, :1], [])
    assert "\\begin{table}" in narrow and "\\begin{table*}" not in narrow


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="no TeX installation (pdflatex) to compile table.tex with")
def test_table_tex_compiles_with_pdflatex_in_a_two_column_paper(tmp_path):
    run = make_run(tmp_path, finished=True)
    report.write_report(run)
    (tmp_path / "cells.tex").write_text(report.formats.latex_table(_cells(), ["a note: 5% \\ _"]))
    for name in ("run/report/table.tex", "cells.tex"):
        (tmp_path / "paper.tex").write_text(
            "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs,siunitx,graphicx}\n"
            f"\\begin{{document}}\n\\input{{{name}}}\nText.\n\\end{{document}}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               "paper.tex"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (name, done.stdout[-3000:])
        assert (tmp_path / "paper.pdf").read_bytes()[:5] == b"%PDF-"


def test_the_final_figure_plots_every_table_metric_with_each_seed_as_a_point(tmp_path):
    run = make_run(tmp_path)
    trials, search = report.load_trials(run), _search(run)
    table = report.ablation_table(trials, search)
    names = {t: g["name"] for g in report.rows.row_groups(trials, search)
             for t in trials.loc[g["index"], "trial"]}
    fig = report.figures.bar_figure(table, search, trials, names)
    metrics = [c[:-len(" mean")] for c in table.columns if c.endswith(" mean")]
    assert len(metrics) == 2 and len(fig.axes) == len(metrics)  # test/mse and test/psnr
    done = trials[trials.status == "completed"]
    for ax, metric in zip(fig.axes, metrics):
        [points] = [c for c in ax.collections if c.get_label() == "seeds"]
        xy = points.get_offsets()
        assert len(xy) == len(done)  # every completed seed, at its row's bar
        assert sorted(np.asarray(xy)[:, 1]) == pytest.approx(sorted(done[metric]))
        rows = np.rint(np.asarray(xy)[:, 0]).astype(int)
        assert sorted(rows.tolist()) == sorted(list(table.index).index(names[t])
                                               for t in done["trial"])
    report.write_report(run)
    assert (run / "report" / "final_bar.png").read_bytes()[:4] == b"\x89PNG"


def _strips(shade: int, densities=("prior", "gmm10")) -> dict:
    """A trial's qualitative.npz arrays, every pixel of a strip one shade (8x8, gray)."""
    def strip(n, value):
        return np.full((n, 8, 8, 1), value, np.uint8)
    return {"inputs": strip(8, shade), "reconstructions": strip(8, shade + 1),
            **{f"samples/{d}": strip(8, shade + 2) for d in densities},
            "interpolation": strip(16, shade + 3)}


def test_the_qualitative_figure_has_a_band_per_row_from_its_lowest_seed_completed_trial(
        tmp_path):
    from PIL import Image
    run = make_run(tmp_path, finished=True)
    trials = report.load_trials(run)
    shades = {}
    for _, t in trials.iterrows():  # each trial's pictures in a shade of its own
        shade = 10 * len(shades)
        shades[t["trial"]] = shade
        np.savez(run / t["trial"] / "qualitative.npz", **_strips(shade))
    text = report.write_report(run)
    assert "qualitative.png" in text
    rows = report.qualitative.pictures(run, trials, _search(run))
    # one band per table row with a completed trial, in the table's order, each the row's
    # lowest completed seed: VAE beta 1 seed 0, UT seed 0 (its seeds 1, 2 failed), VAE 0.5 seed 0
    table = report.ablation_table(trials, _search(run))
    assert [name.split("\n")[0] for name, _ in rows] == list(table.index)
    for name, strips in rows:
        assert name.endswith("seed 0")
    expected = [shades[t] for t in trials[(trials["seed"] == 0)]["trial"]]
    assert sorted(int(s["inputs"][0, 0, 0, 0]) for _, s in rows) == sorted(expected)
    image = Image.open(run / "report" / "qualitative.png")
    assert image.size[0] > image.size[1] > 200  # wider than high, three bands


def test_every_figure_is_written_as_a_pdf_beside_its_png_and_the_pictures_fill_a_page(
        tmp_path):
    """A paper takes the PDF (vectors; the pictures at their own pixels); the PNG of the
    pictures is wide enough for a two-column page's full width at 300 dpi."""
    from matplotlib.figure import Figure
    from PIL import Image
    from engine.report import figures, qualitative
    run = make_run(tmp_path, finished=True)
    for _, t in report.load_trials(run).iterrows():
        np.savez(run / t["trial"] / "qualitative.npz", **_strips(0))
    text = report.write_report(run)
    out = run / "report"
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert pngs == ["final_bar", "qualitative", "val_curves"]
    assert sorted(p.stem for p in out.glob("*.pdf")) == pngs
    for stem in pngs:
        pdf = (out / f"{stem}.pdf").read_bytes()
        assert pdf[:5] == b"%PDF-" and b"/Type3" not in pdf, stem  # TrueType fonts, not Type 3
        assert f"{stem}.pdf" in text
    assert Image.open(out / "qualitative.png").size[0] >= qualitative.PAPER_PIXELS >= 2000
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    figures.save_figure(fig, tmp_path / "study.png")  # a study's own figure, the same way
    assert (tmp_path / "study.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"


def test_the_curves_figure_names_rows_as_the_table_and_shows_the_last_third_apart(tmp_path):
    """val_curves: the metric's and the rows' display names (as the table shows them), every
    epoch on the left and the last third on the right, on an axis of its own."""
    from engine.report import figures
    from engine.report.display import metric_name
    run = make_run(tmp_path)
    trials, curves, search = report.load_trials(run), report.load_curves(run), _search(run)
    table = report.ablation_table(trials, search)
    names = {t: g["name"] for g in report.rows.row_groups(trials, search)
             for t in trials.loc[g["index"], "trial"]}
    fig = figures.curves_figure(curves, names, table.index, search)
    whole, last = fig.axes
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(table.index)
    assert UT in list(table.index)  # a display name, not the trial folder's spelling
    assert metric_name("val/mse")[0] in fig.get_suptitle() and whole.get_ylabel() == "val. MSE ↓"
    epochs = [sorted({e for line in ax.lines for e in line.get_xdata()}) for ax in (whole, last)]
    assert epochs == [[1, 2, 3], [2, 3]]  # the last third of epochs 1 to 3
    low, high = last.get_ylim()
    val = curves[(curves.metric == "val/mse") & (curves.epoch >= 2)]["value"]
    assert low > whole.get_ylim()[0] and high < val.max() * 1.2  # fitted to the last third


def test_a_row_without_pictures_is_left_out_and_the_title_says_so(tmp_path):
    run = make_run(tmp_path, finished=True)
    trials = report.load_trials(run)
    first = trials[trials["label"] == "VAE"]["trial"].iloc[0]
    np.savez(run / first / "qualitative.npz", **_strips(0, densities=("prior",)))
    rows = report.qualitative.pictures(run, trials, _search(run))
    assert len(rows) == 1
    title = report.qualitative.title(_search(run), rows, trials)
    assert "2 row(s) with no completed trial that saved its pictures are left out" in title
    # a truncated file (a crash while it was written) is no picture, not an error
    (run / first / "qualitative.npz").write_bytes(b"PK\x03\x04 cut")
    assert report.qualitative.pictures(run, trials, _search(run)) == []
    report.write_report(run)
    assert not (run / "report" / "qualitative.png").exists()


def test_a_figure_that_cannot_be_drawn_costs_the_report_nothing_but_itself(tmp_path,
                                                                           monkeypatch):
    """fANOVA raises on trials that all scored the same ("zero total variance"): the plot is
    named in one line, the tables and every other file are written."""
    from engine.report import tuning
    run = make_run(tmp_path, finished=True)
    search = _search(run)
    search.update(search="optuna", space={"beta": '{"name": "FloatDistribution", "attributes": '
                                                  '{"step": null, "low": 0.0001, "high": 2.0, '
                                                  '"log": true}}'})
    (run / "search.json").write_text(json.dumps(search))

    def fails(path):
        raise RuntimeError("Encountered zero total variance in all trees.")
    monkeypatch.setattr(tuning, "plot_writers",
                        lambda *a: {"optuna_importances.png": fails})
    text = report.write_report(run)
    assert ("report/optuna_importances.png not written: RuntimeError: Encountered zero total "
            "variance in all trees.") in text
    assert not (run / "report" / "optuna_importances.png").exists()
    for name in (*report.REPORT_FILES, "importances.md"):
        assert (run / "report" / name).stat().st_size > 0, name
    assert (run / "optuna.db").is_file()  # the study itself was still kept


def test_a_run_without_its_table_metrics_tables_what_the_trials_logged(tmp_path):
    """Issue 31: `--eval none` printed a table of dashes. With none of the table's metrics
    computed, the table shows the search metric and the other val/ and test/ metrics the
    trials logged, each row's mean over its seeds, and says so in a note."""
    run = make_run(tmp_path)
    for f in run.glob("*/result.json"):  # as --eval none leaves them: no test/ metrics
        lines = [json.loads(t) for t in f.read_text().splitlines() if t.endswith("}")]
        f.write_text("".join(json.dumps({k: v for k, v in x.items()
                                         if not k.startswith("test/")}) + "\n" for x in lines))
    trials = report.load_trials(run)
    table = report.ablation_table(trials, json.loads((run / "search.json").read_text()))
    assert [c.removesuffix(" mean") for c in table.columns if c.endswith(" mean")] == [
        "val/mse", "val/psnr"]
    done = trials[trials["status"] == "completed"]
    keys = ["label", *[c for c in done.columns if c.startswith("config/")]]
    rows = done.groupby(keys, dropna=False)["val/mse"].mean()  # each row over its seeds
    assert sorted(table["val/mse mean"].dropna()) == pytest.approx(sorted(rows))
    assert any(n.startswith("none of the table's metrics (test/mse, test/psnr) was computed")
               and n.endswith("logged instead: val/mse, val/psnr") for n in table.attrs["notes"])


def test_the_title_does_not_double_a_studys_full_stop():
    """Issue 31: "…(Janjoš et al.). (ablation_uae): …", a study's docstring sentence with its
    full stop before ours."""
    search = {"title": "UAE Table 2: the ablation (Janjoš et al.).", "name": "ablation_uae",
              "dataset": "mnist5k", "epochs": 150, "seeds": [0], "metric": "val/mse",
              "mode": "min"}
    assert report._title(search, True).startswith(
        "UAE Table 2: the ablation (Janjoš et al.) (ablation_uae): mnist5k, 150 epochs")


def test_the_title_and_first_note_say_which_rows_more_seeds_grew_and_from_which_code():
    search = {"title": "T", "name": "s", "dataset": "digits", "epochs": 5, "seeds": [0, 1],
              "metric": "val/mse", "mode": "min", "git": "aaa",
              "rows": [{"label": "UAE"}, {"label": "RAE"}, {"label": "VAE"}],
              "row_seeds": {"UAE": [0, 1, 2, 3], "RAE": [0, 1, 2, 3]},
              "environment": {"resumes": [{"git": "aaa"}]}}
    assert "seeds 0, 1 (more for some rows: see the notes), val/mse" in report._title(search,
                                                                                      True)
    note = report._more_seeds_text(search)
    assert note.startswith("more seeds (--resume --more-seeds): UAE, RAE: seeds 0-3.")
    assert "second look" in note and "another commit" not in note
    search["row_seeds"]["VAE"] = [0, 1, 4]
    search["environment"]["resumes"].append({"git": "bbb+uncommitted"})
    assert "(more for every row: see the notes)" in report._title(search, True)
    note = report._more_seeds_text(search)
    assert "UAE, RAE: seeds 0-3; VAE: seeds 0, 1, 4." in note
    assert "another commit than its start (aaa; then bbb+uncommitted)" in note
    # without any, or with a hand-edited list instead of an object: no note, no error
    for row_seeds in ({}, [["UAE", [0, 1, 2]]]):
        search["row_seeds"] = row_seeds
        assert report._more_seeds_text(search) == ""
        assert "more for" not in report._title(search, True)


def test_status_lists_every_trial_with_its_state_and_the_search_s(tmp_path):
    """Issue 31: `vae-ablations status RUN`, readable from another terminal: the search's
    state (from finished.json and the run lock's holder, never by taking the lock), a line
    per trial with its row, seed, state, epochs and latest search metric, and the grid's
    trials not started."""
    import socket
    from engine.report.status import status_text
    run = make_run(tmp_path)
    trials = report.load_trials(run)
    text = status_text(run)
    assert text.splitlines()[0].endswith("search interrupted (--resume finishes it)")
    for _, t in trials.iterrows():
        line = next(x for x in text.splitlines() if x.rstrip().endswith(t["trial"]))
        assert t["status"] in line and f"{int(t['epochs_done'])}/{EPOCHS}" in line
        if t["status"] == "completed":
            assert f"{t['val/mse']:.4g}" in line
    from engine.run.folder import lock_run_folder
    fd = lock_run_folder(run)  # this very process holds it, as a search would: alive
    try:
        holder = (run / "run.lock").read_text().strip()
        assert holder.startswith(f"pid {os.getpid()} on {socket.gethostname()}, since ")
        text = status_text(run)
    finally:
        os.close(fd)
    assert text.splitlines()[0].endswith(f"search running ({holder})")
    assert " running " in text and " unfinished " not in text  # its unfinished trials run
    (run / "run.lock").write_text("pid 99999999 on " + socket.gethostname() + ", since x\n")
    assert status_text(run).splitlines()[0].endswith("interrupted (--resume finishes it)")
    (run / "finished.json").write_text("{}")
    assert status_text(run).splitlines()[0].endswith("search finished")
    done = _cli("status", str(run))
    assert done.returncode == 0 and done.stdout.strip() == status_text(run)
