"""The engine end to end: search scripts run as subprocesses at --smoke size (Ray local on
this machine), resume, divergence, ASHA, Optuna, TensorBoard,
and input refused before anything starts."""
from __future__ import annotations

import ast
import io
import json
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
import pytest
import torch

import models
from engine.eval.tensorboard import ascii_text
from engine.report.display import metric_name
from engine.report import load_trials
from engine.run.cli import parse_args
from engine.run.spec import load
from engine.run import run

sys.path.insert(0, str(Path(__file__).parent))
from tb_hparams import read_hparams, run_names  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UAE_ROWS = ["VAE", "RAE", "RAE-L2", "RAE-GP", "VAE*", "UT-VAE*", "UT-VAE*-full-Σ", "UAE"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# the searches these tests interrupt, kill and resume checkpoint every epoch, so that what
# they check (a trial continues from the epoch after its last checkpoint) is every epoch's;
# the default, by time (5m), would checkpoint these seconds-long trials at their end only
EVERY_EPOCH = ["--checkpoint-every", "1"]


def search(args, timeout=600, script="searches/ablation_uae.py", env=None, **kw):
    return subprocess.run([sys.executable, str(ROOT / script), *EVERY_EPOCH, *args], cwd=ROOT,
                          env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, **kw)


def write_script(tmp_path, body: str) -> str:
    path = tmp_path / "study.py"
    path.write_text("import sys\nfrom engine.run import Search, run, grid\n" + body)
    return str(path)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "uae"
    # $RAY_ADDRESS (as docs/cluster.md exports it for `ray job submit`) must not pull a local run
    # onto a cluster: here it names a port where nothing listens, which ray.init would try
    proc = search(["--smoke", "--seeds", "2", "--out", str(out)],
                  env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_ablation_uae_smoke_writes_the_table_of_every_row(smoke_run):
    out, proc = smoke_run
    trials = load_trials(out)
    assert len(trials) == 16 and set(trials["status"]) == {"completed"}
    assert sorted(trials["label"].unique()) == sorted(UAE_ROWS)
    table = (out / "report" / "table.md").read_text()
    for label in UAE_ROWS:
        assert f"| {label} " in table and label in proc.stdout
    # each FID column followed by its KID (unbiased on the small reference set)
    header = table.split("\n| label")[1].split("\n")[0]
    for images in ("rec.", "GMM-10", "interp. mid"):
        assert f"FID ({images}) ↓" in header and f"KID ({images}) ↓" in header
        assert header.index(f"FID ({images})") < header.index(f"KID ({images})")
    for name in ("table.tex", "table.csv", "trials.csv", "val_curves.png", "final_bar.png"):
        assert (out / "report" / name).stat().st_size > 0
    # every trial stores its fully resolved configuration: the preset of its row, all but the
    # VAE's in the authors' code's reading, which search.json and a note of the table name
    code = set(UAE_ROWS) - {"VAE"}
    for params in out.glob("*/params.json"):
        p = json.loads(params.read_text())
        preset = f"{p['label']}-code" if p["label"] in code else p["label"]
        # with the UAE code's ReduceLROnPlateau, which the study gives every row
        assert models.Config.from_dict(p["config"]) == models.PRESETS[preset].replace(
            lr_schedule="plateau")
        assert p["epochs"] == 2 and p["seed"] in (0, 1)
    search_json = json.loads((out / "search.json").read_text())
    assert search_json["git"] and [r["label"] for r in search_json["rows"]] == UAE_ROWS
    assert {r["label"]: r["preset"] for r in search_json["rows"]
            if r.get("preset") not in (None, r["label"])} == {label: f"{label}-code" for label in code}
    assert "UAE runs UAE-code" in table and "RAE-GP runs RAE-GP-code" in table
    assert "VAE runs" not in table
    # the evaluation: UAE Table 2's FIDs for every trial, in the feature space it names
    for metric in ("eval/fid_rec", "eval/fid_sample_gmm10", "eval/fid_interp_mid"):
        assert trials[metric].notna().all() and (trials[metric] > 0).all(), metric
        assert f"digits: {metric_name(metric)[0]}" in table
    assert "FID, precision and recall in classifier-digits" in table
    assert "test/lpips not computed" not in table  # not one of this search's table metrics


def test_evaluate_command_reproduces_a_trials_final_evaluation(smoke_run):
    out, _ = smoke_run
    folder = next(out.glob("RAE_seed1_*"))
    reported = json.loads((folder / "result.json").read_text().splitlines()[-1])
    proc = subprocess.run([sys.executable, "-m", "engine", "evaluate", str(folder),
                           "--out", str(folder / "again.json")], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((folder / "again.json").read_text())
    for metric in ("test/mse", "test/ssim", "eval/fid_rec", "eval/fid_sample_gmm10",
                   "eval/fid_interp_rand", "eval/recall_rec"):
        assert again[metric] == pytest.approx(reported[metric], rel=1e-4), metric
    assert again["notes"]["features"] == reported["notes"]["features"]
    # a folder that is neither a trial nor a run (a run's own: tests/test_evaluate_run.py)
    bad = subprocess.run([sys.executable, "-m", "engine", "evaluate", str(out / "report")],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "holds no checkpoint" in bad.stderr


def test_the_report_command_rebuilds_the_same_table(smoke_run):
    out, _ = smoke_run
    before = (out / "report" / "table.csv").read_text()
    (out / "report" / "table.csv").unlink()
    proc = subprocess.run([sys.executable, "-m", "engine", "report", str(out)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report" / "table.csv").read_text() == before


RAY_LINES = ("Token authentication is enabled", "Started a local Ray instance",
             "Configuration for experiment", "View detailed results",
             "Wrote the latest version of all result files")


def test_the_console_holds_the_searchs_lines_and_search_log_rays(smoke_run):
    """Issue 31: Ray's token warning and start line, Tune's configuration box, its "View
    detailed results" and INFO lines interleaved with the search's own; now they are in
    <run>/search.log and the terminal has the header, the trial and progress lines, the
    table."""
    out, proc = smoke_run
    shown = proc.stdout + proc.stderr
    assert not [x for x in RAY_LINES if x in shown], shown
    assert not re.search(r"\(\w+ pid=\d+", shown)  # no trial output forwarded by Ray
    log = (out / "search.log").read_text()
    assert "Started a local Ray instance" in log and "Wrote the latest version" in log
    first = proc.stdout.splitlines()[0]
    assert first.startswith("UAE Table 2:") and first.endswith(f"-> {out}")
    assert proc.stderr.strip() == "", proc.stderr


def test_verbose_leaves_rays_and_the_trackers_lines_on_the_terminal(tmp_path):
    quiet, loud = tmp_path / "quiet", tmp_path / "loud"
    args = ["--dataset", "digits", "--smoke", "--rows", "VAE", "--seeds", "1", "--eval", "none",
            "--tracker", "mlflow"]
    proc = search([*args, "--out", str(quiet)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLflow database" not in proc.stdout + proc.stderr
    assert "Creating initial MLflow database tables" in (quiet / "search.log").read_text()
    proc = search([*args, "--out", str(loud), "-v"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Started a local Ray instance" in proc.stderr
    assert "Creating initial MLflow database tables" in proc.stderr
    assert "Configuration for experiment" in proc.stdout  # Tune's own box, as Ray prints it
    assert not (loud / "search.log").exists()


def test_a_search_prints_its_progress_after_every_finished_trial(smoke_run):
    """Not a terminal (captured): a line per finished trial, each followed by where the
    search stands; the counts add up to the 16 trials and end with all done."""
    _, proc = smoke_run
    lines = proc.stdout.splitlines()
    progress = [re.match(r"progress: (\d+) of 16 done, (\d+) running, (\d+) pending, "
                         r"(\d+) failed; (\S+) elapsed, (.+)$", x)
                for x in lines if x.startswith("progress: ")]
    assert len(progress) >= 16 and all(progress), lines
    counts = [tuple(map(int, m.groups()[:4])) for m in progress]
    assert all(sum(c) == 16 for c in counts)
    done = [c[0] for c in counts]
    assert done == sorted(done) and done[-1] == 16 and counts[-1] == (16, 0, 0, 0)
    assert progress[-1][6] == "none left"
    assert all(m[6] == "time left not yet known" or re.fullmatch(r"~\S+ left", m[6])
               for m in progress[:-1])
    trial_lines = [i for i, x in enumerate(lines) if re.match(r"\[\d+\] ", x)]
    assert len(trial_lines) == 16  # and the next line is the progress after it
    assert all(lines[i + 1].startswith("progress: ") for i in trial_lines)


def test_tensorboard_has_scalars_images_and_hparams(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, _ = smoke_run
    # issue 31: the run list reads <row>/seed<k>, so `^RAE/` selects a row's seeds
    assert run_names(out / "tensorboard") == {f"{ascii_text(row)}/seed{k}"
                                              for row in UAE_ROWS for k in (0, 1)}
    assert f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}" in smoke_run[1].stdout
    logdir = out / "tensorboard" / "UAE" / "seed0"
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/recon", "train/latent_reg", "train/decoder_reg",
                "val/mse", "test/mse"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("val/mse")] == [1, 2]
    # the smoke evaluation samples the prior and GMM-10 (engine/run/cli.py SMOKE_SKIPS)
    assert {"reconstructions", "samples/prior", "samples/gmm10"} <= set(tags["images"])
    # 8x8 digits enlarged 8x (nearest) so a grid is legible: 16 of 64 px, 2 px apart
    grid = acc.Images("reconstructions")[-1]
    assert (grid.width, grid.height) == (16 * 66 + 2, 2 * 66 + 2)  # inputs over reconstructions
    image = np.asarray(Image.open(io.BytesIO(grid.encoded_image_string)))
    cell = image[2:66, 2:66]  # the first input: 8x8 blocks of one value each
    assert (cell == np.repeat(np.repeat(cell[::8, ::8], 8, 0), 8, 1)).all()
    # the HPARAMS tab (as its plugin serves it): a group per row, its two seeds' sessions,
    # every table metric once (no final/* copies), the search and data set as columns
    experiment, groups = read_hparams(out)
    assert sorted(experiment["hparams"]["label"]) == sorted(ascii_text(r) for r in UAE_ROWS)
    assert experiment["hparams"]["search"] == ["ablation_uae"]
    assert experiment["hparams"]["dataset"] == ["digits"]
    assert {"val/mse", "test/mse", "test/psnr", "eval/fid_rec"} <= set(experiment["metrics"])
    assert not [m for m in experiment["metrics"] if m.startswith("final/")]
    assert set(groups) == {f"{out.name}/{row}" for row in UAE_ROWS}
    assert set(read_hparams(out, filters=True)[1]) == set(groups)  # UT-VAE*-full-Σ's too
    uae = groups[f"{out.name}/UAE"]
    assert {s["status"] for s in uae["sessions"].values()} == {"SUCCESS"}
    assert len(uae["sessions"]) == 2  # seeds 0 and 1, aggregated
    trials = load_trials(out).set_index(["label", "seed"])
    assert uae["metrics"]["test/mse"] == pytest.approx(trials.loc[("UAE", slice(None)),
                                                                  "test/mse"].mean(), rel=1e-6)


def test_resume_after_the_driver_is_killed_reruns_no_finished_trial(tmp_path):
    out = tmp_path / "run"
    args = ["--smoke", "--seeds", "3", "--epochs", "3", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "searches/ablation_uae.py"), *EVERY_EPOCH,
                             *args],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    finished = {}
    while time.time() < deadline and len(finished) < 4:
        time.sleep(0.5)
        for f in out.glob("*/result.json"):
            lines = f.read_text().splitlines()
            if lines and '"completed"' in lines[-1]:
                finished[f.parent.name] = f.read_text()
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-search
    proc.wait()
    assert len(finished) >= 4 and not (out / "finished.json").exists()
    time.sleep(1)
    done_before = {f.parent.name: f.read_text() for f in out.glob("*/result.json")
                   if '"completed"' in (f.read_text().splitlines() or [""])[-1]}
    # a driver killed alone (kill -9 of its PID) can die holding lines its trials reported
    # and checkpointed (issue 30): an unfinished trial's result.json then ends short of its
    # checkpoint. Cut each such file to nothing, the worst of it
    cut = [f for f in out.glob("*/result.json") if f.parent.name not in done_before
           and any(f.parent.glob("checkpoint_*/lines.jsonl"))]
    for f in cut:
        f.write_text("")

    resumed = search(["--resume", *args])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = load_trials(out)
    assert len(trials) == 24 and set(trials["status"]) == {"completed"}
    assert trials.groupby(["label", "seed"]).size().eq(1).all()  # each exactly once
    for name, text in done_before.items():  # finished trials were not run again
        assert (out / name / "result.json").read_text() == text
    for f in out.glob("*/result.json"):  # every epoch exactly once, the cut ones' too
        epochs = [json.loads(line)["epoch"] for line in f.read_text().splitlines()]
        assert epochs == [1, 2, 3], (f.parent.name, f in cut)


def test_resume_continues_trials_that_tunes_saved_state_lost(tmp_path):
    # What a killed driver can leave: a trial it had not created (its folder is gone here), a
    # trial that errored after epoch 1 with its epoch-1 checkpoint, and Tune's own state cut
    # short while it was synced. The resume never reads Tune's state (nor any pickle of the
    # run folder) and continues both trials from the run's own files.
    out = tmp_path / "run"
    args = ["--smoke", "--rows", "RAE,VAE", "--seeds", "2", "--out", str(out)]
    assert search(args).returncode == 0
    shutil.rmtree(next(out.glob("VAE_seed1_*")))
    broken = next(out.glob("RAE_seed0_*"))
    lines = (broken / "result.json").read_text().splitlines()
    (broken / "result.json").write_text(lines[0] + "\n")
    (broken / "error.txt").write_text("ValueError: Could not recover from checkpoint\n")
    [ckpt] = broken.glob("checkpoint_*/state.pt")
    state = torch.load(ckpt, weights_only=True)
    state["epoch"] = 1
    torch.save(state, ckpt)
    kept = {f.parent.name: f.read_text() for f in out.glob("*/result.json")
            if f.parent != broken}
    for f in [*out.glob("experiment_state-*.json"), *out.glob("*.pkl")]:
        f.write_bytes(f.read_bytes()[:100])  # cut short

    resumed = search(["--resume", *args, "--epochs", "5", "--seeds", "3"])  # flags ignored:
    assert resumed.returncode == 0, resumed.stderr[-3000:]      # the run's own settings hold
    assert "own settings (search.json): 2 rows x 2 seeds on digits, 2 epochs" in resumed.stdout
    assert "resume: 2 trial(s) to finish: RAE seed 0, VAE seed 1" in resumed.stdout
    trials = load_trials(out)
    assert sorted(zip(trials["label"], trials["seed"])) == [("RAE", 0), ("RAE", 1),
                                                             ("VAE", 0), ("VAE", 1)]
    assert set(trials["status"]) == {"completed"}
    epochs = [json.loads(x)["epoch"] for x in (broken / "result.json").read_text().splitlines()]
    assert epochs == [1, 2]  # continued from its checkpoint, not from scratch
    assert (broken / "error-before-resume.txt").exists()
    for name, text in kept.items():  # the others were not run again
        assert (out / name / "result.json").read_text() == text
    assert (out / "finished.json").exists()


def test_a_search_runs_on_a_real_data_set_from_its_files(tmp_path):
    # Fashion-MNIST's gzipped IDX files (tiny, written here) under --data-root; the network
    # for the 28x28 images is picked by size, nothing names an architecture
    from test_real_data import write_mnist
    write_mnist(tmp_path / "data", "FashionMNIST", n_train=48, n_test=12)
    out = tmp_path / "run"
    proc = search(["--smoke", "--rows", "RAE", "--dataset", "fashion", "--data-root",
                   str(tmp_path / "data"), "--eval", "reconstruction", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    [trial] = load_trials(out).itertuples()
    assert trial.status == "completed" and trial.epochs_done == 2
    [ckpt] = out.glob("RAE_seed0_*/checkpoint_*/state.pt")
    state = torch.load(ckpt, weights_only=True)
    model = models.build(models.Config.from_dict(state["params"]["config"]), (1, 28, 28))
    model.load_state_dict(state["model"])  # strict: the trial trained this conv28 network
    assert model.arch == "conv28" and state["params"]["data_root"] == str(tmp_path / "data")


def test_a_diverging_trial_does_not_stop_the_others(tmp_path):
    script = write_script(tmp_path, """
SEARCH = Search(name="div", title="divergence", seeds=1, epochs=3,
                rows={"AE": "AE", "AE-lr-1e30": ("AE", {"lr": 1e30}), "VAE": "VAE"})
sys.exit(run(SEARCH))
""")
    out = tmp_path / "run"
    proc = search(["--dataset", "digits", "--eval", "reconstruction", "--out", str(out)],
                  script=script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out).set_index("label")
    assert trials.loc["AE-lr-1e30", "status"] == "diverged"
    assert trials.loc["AE", "status"] == "completed" and trials.loc["VAE", "status"] == "completed"
    assert pd.notna(trials.loc["AE", "test/mse"])
    assert "diverged" in (out / "report" / "table.md").read_text()
    _, groups = read_hparams(out)  # TensorBoard's HParams: the diverged trial a failure
    status = {g.split("/", 1)[1]: {s["status"] for s in v["sessions"].values()}
              for g, v in groups.items()}
    assert status == {"AE": {"SUCCESS"}, "AE-lr-1e30": {"FAILURE"}, "VAE": {"SUCCESS"}}


def test_an_auto_budget_ends_each_trial_at_its_own_plateau_completed(tmp_path):
    """--epochs auto on the digits: each trial (a small AE and VAE at a high rate, most of
    which flatten within the cap: measured 13, 20, 12 and 20 epochs) ends at its own epoch,
    at its plateau or at --max-epochs, completed and evaluated either way, its reason in its
    last result line; the report marks those at a plateau converged (the rule is its
    criterion); search.json records the budget for --resume and the report."""
    script = write_script(tmp_path, """
SEARCH = Search(name="auto", title="auto budget", seeds=2, rows={"AE": "AE", "VAE": "VAE"})
sys.exit(run(SEARCH))
""")
    out = tmp_path / "run"
    proc = search(["--dataset", "digits", "--epochs", "auto", "--max-epochs", "20",
                   "--min-epochs", "3", "--set", "lr=1e-2", "latent_dim=2", "--eval",
                   "reconstruction", "--out", str(out)], script=script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epochs auto: each trial to its plateau of val/mse, 3 to 20 epochs" in proc.stdout
    trials = load_trials(out)
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert trials["test/mse"].notna().all() and trials["epochs_done"].nunique() > 1
    early = trials[trials["epochs_done"] < 20]
    assert len(early) >= 2 and early["epochs_done"].min() > 3, trials["epochs_done"]
    assert early["converged"].all()
    for f in out.glob("*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines()]
        n = lines[-1]["epoch"]
        assert [x["epoch"] for x in lines] == list(range(1, n + 1))
        reason = lines[-1]["end_reason"]
        assert reason.startswith(f"plateau at epoch {n} ") or (
            n == 20 and reason.startswith("max epochs 20 reached, no plateau")), reason
        assert all(x["end_reason"] is None for x in lines[:-1])
        params = json.loads((f.parent / "params.json").read_text())
        assert (params["budget"], params["epochs"], params["min_epochs"]) == ("auto", 20, 3)
    saved = json.loads((out / "search.json").read_text())
    assert (saved["budget"], saved["epochs"], saved["min_epochs"],
            saved["plateau_patience"]) == ("auto", 20, 3, 3)
    from engine.run import Search  # the script's study: a resume takes the run's own study
    study = Search(name="auto", title="auto budget", seeds=2, rows={"AE": "AE", "VAE": "VAE"})
    spec = load(out, study, parse_args(study, ["--resume", "--out", str(out)]))
    assert (spec.budget, spec.epochs, spec.min_epochs) == ("auto", 20, 3)
    assert spec.trial_space()["budget"] == "auto"


def test_a_studys_budget_may_be_auto_and_the_flags_override_it():
    from engine.run import Search
    study = Search(name="s", title="s", rows={"AE": "AE"}, epochs="auto", max_epochs=300,
                   smoke={"epochs": "auto", "max_epochs": 6, "min_epochs": 2, "seeds": 1})

    def budget(argv):
        flags = parse_args(study, argv)
        return flags.budget, flags.epochs, flags.min_epochs
    assert budget([]) == ("auto", 300, 20)
    assert budget(["--max-epochs", "50", "--min-epochs", "5"]) == ("auto", 50, 5)
    assert budget(["--epochs", "40"]) == ("fixed", 40, 0)  # the study's cap is no flag
    assert budget(["--smoke"]) == ("auto", 6, 2)
    plain = Search(name="p", title="p", rows={"AE": "AE"})
    flags = parse_args(plain, [])
    assert (flags.budget, flags.epochs) == ("fixed", 30)


def test_the_command_line_is_parsed_once_into_frozen_flags():
    """Issue 32: every later stage takes the Flags whole and none can change them."""
    import dataclasses
    from engine.run import Search
    from engine.run.cli import Flags
    from engine.run.types import BadInput
    study = Search(name="s", title="s", rows={"AE": "AE"})
    flags = parse_args(study, ["--seeds", "2", "--tracker", "mlflow", "--tracker", "mlflow",
                                "--cpus-per-trial", "2"])
    assert isinstance(flags, Flags)
    assert (flags.seeds, flags.trackers, flags.resources.cpu) == (2, ("mlflow",), 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        flags.seeds = 3
    with pytest.raises(BadInput, match="--max-epochs 5 is for --epochs auto"):
        parse_args(study, ["--epochs", "4", "--max-epochs", "5"])


def test_asha_stops_weak_trials_and_finishes_the_rest(tmp_path):
    out = tmp_path / "run"
    proc = search(["--dataset", "digits", "--scheduler", "asha", "--epochs", "9", "--seeds",
                   "1", "--eval", "reconstruction", "--out", str(out), "--image-every", "100"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out)
    assert "stopped early" in set(trials["status"]) and "completed" in set(trials["status"])
    assert trials["epochs_done"].sum() < 8 * 9
    stopped = trials[trials["status"] == "stopped early"]
    assert set(stopped["epochs_done"]) <= {1, 3}
    # each recorded by the scheduler as it stopped it (not inferred from a short run), and
    # announced once as such
    for _, t in stopped.iterrows():
        record = json.loads((out / t["trial"] / "stopped.json").read_text())
        assert record["by"] == "ASHA" and record["at_epoch"] == t["epochs_done"]
    assert proc.stdout.count(": stopped early at epoch") == len(stopped)
    assert (out / "finished.json").exists()
    # TensorBoard's HParams: every trial a session from its start; a stopped one with no end
    # status ("unknown") and its last epoch's val/mse, a completed one a success
    _, groups = read_hparams(out)
    sessions = {name: session for g in groups.values()
                for name, session in g["sessions"].items()}
    assert len(sessions) == len(trials)
    for _, t in trials.iterrows():  # each trial's events in <run>/tensorboard/<row>/seed<k>
        session = sessions[f"tensorboard/{ascii_text(t['label'])}/seed{t['seed']}"]
        assert session["status"] == ("SUCCESS" if t["status"] == "completed" else "UNKNOWN")
        assert session["metrics"]["val/mse"][0] == t["epochs_done"]


def test_optuna_samples_the_declared_space(tmp_path):
    script = write_script(tmp_path, """
from ray import tune
SEARCH = Search(name="opt", title="optuna", seeds=1, epochs=2, rows={"UAE": "UAE"},
                space={"beta": tune.loguniform(1e-5, 1e-2), "lr": tune.loguniform(1e-4, 1e-2)})
sys.exit(run(SEARCH))
""")
    out = tmp_path / "run"
    proc = search(["--dataset", "digits", "--search", "optuna", "--samples", "3", "--eval",
                   "reconstruction", "--out", str(out)], script=script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    configs = [json.loads(p.read_text())["config"] for p in out.glob("*/params.json")]
    assert len(configs) == 3 and len({c["beta"] for c in configs}) == 3
    assert all(1e-5 <= c["beta"] <= 1e-2 and 1e-4 <= c["lr"] <= 1e-2 for c in configs)
    assert all(c["posterior"] == "full" for c in configs)  # the rest is the UAE preset
    # three trials of one row and seed: each TensorBoard run adds its trial's number
    numbers = {p.parent.name.rsplit("_", 1)[-1] for p in out.glob("*/params.json")}
    assert len(numbers) == 3
    assert run_names(out / "tensorboard") == {f"UAE/seed0/{n}" for n in numbers}

    # --resume of a sampled run: an unfinished trial continues with its own sampled config,
    # and the samples still owed (5 asked, 3 run) are drawn anew, told the finished ones
    cut = next(out.glob("UAE_seed0_*"))
    cut_config = json.loads((cut / "params.json").read_text())["config"]
    (cut / "result.json").write_text((cut / "result.json").read_text().splitlines()[0] + "\n")
    [ckpt] = cut.glob("checkpoint_*/state.pt")
    state = torch.load(ckpt, weights_only=True)
    state["epoch"] = 1
    torch.save(state, ckpt)
    saved = json.loads((out / "search.json").read_text())
    (out / "search.json").write_text(json.dumps({**saved, "samples": 5}))
    resumed = search(["--resume", "--out", str(out)], script=script)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: 1 trial(s) to finish, 2 more to sample" in resumed.stdout
    trials = load_trials(out)
    assert len(trials) == 5 and set(trials["status"]) == {"completed"}
    assert [json.loads(x)["epoch"] for x in (cut / "result.json").read_text().splitlines()] == [
        1, 2]
    assert json.loads((cut / "params.json").read_text())["config"] == cut_config
    betas = [json.loads(p.read_text())["config"]["beta"] for p in out.glob("*/params.json")]
    assert len(set(betas)) == 5  # not the first samples of seed 0 again
    # the continued trial goes on in its own TensorBoard run; the two new ones get theirs
    numbers = {p.parent.name.rsplit("_", 1)[-1] for p in out.glob("*/params.json")}
    assert len(numbers) == 5 and cut.name.rsplit("_", 1)[-1] in numbers
    assert run_names(out / "tensorboard") == {f"UAE/seed0/{n}" for n in numbers}


@pytest.mark.parametrize("argv, message", [
    (["--set", "beta=-1"], "beta"),
    (["--set", "bogus=1"], "bogus"),
    (["--set", "laten_dim=8"], "did you mean laten_dim -> latent_dim?"),
    (["--rows", "VAE,Nope"], "Nope"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "abc"], "--epochs 'abc': give a whole number of epochs or auto"),
    (["--epochs", "auto", "--max-epochs", "-3"], "--max-epochs -3 must be >= 1"),
    (["--epochs", "auto", "--max-epochs", "0"], "--max-epochs 0 must be >= 1"),
    (["--epochs", "auto", "--max-epochs", "many"], "--max-epochs 'many'"),
    (["--epochs", "auto", "--max-epochs", "10"], "--max-epochs 10 is below the 20 epochs"),
    (["--epochs", "auto", "--max-epochs", "9", "--min-epochs", "10"],
     "--min-epochs 10 is above --max-epochs 9"),
    (["--epochs", "5", "--max-epochs", "50"], "--max-epochs 50 is for --epochs auto"),
    (["--epochs", "5", "--min-epochs", "3"], "--min-epochs 3 is for --epochs auto"),
    (["--epochs", "auto", "--max-epochs", "50", "--set", "lr_schedule=cosine"],
     "row 'VAE' has lr_schedule=cosine"),
    (["--workers-per-trial", "0"], "--workers-per-trial"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["--search", "optuna"], "space"),
    (["--set", "arch=conv64"], "conv64"),
    (["--eval", "fid,bogus"], "bogus"),
    (["--fid-samples", "0"], "fid_samples"),
    (["--eval-set", "iwae_k=many"], "iwae_k"),
    (["--eval-set", "densities=gmm7"], "gmm7"),
    (["--eval-set", "nonsense=1"], "nonsense"),
    (["--inception-weights", "/no/such/file.pth"], "/no/such/file.pth"),
    (["--data-root", "/no/such/root"], "/no/such/root"),
    (["--dataset", "celebahq", "--data-root", "/tmp"], "/tmp/celebahq"),
    (["--rows", ""], "names no row"),
    (["--rows", " , "], "names no row"),
    (["--fid-samples", "10"], "give at least 65"),  # the classifier's 64-d features
    (["--features", "inception"], "8x8 images"),
    (["--set", "hidden=300000"], "cannot be built on this machine"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_starts(argv, message, tmp_path,
                                                                 capsys):
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    out = tmp_path / "run"
    assert run(SEARCH, ["--dataset", "digits", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err
    assert not out.exists()


def test_an_auto_budget_without_a_cap_is_refused_where_the_study_has_none(tmp_path, capsys):
    """Every study's default caps its auto budget; one declared with a fixed budget (as every
    study was before) has no cap to fall back on."""
    sys.path.insert(0, str(ROOT))
    from searches.sigma_points import SEARCH
    fixed = dataclasses.replace(SEARCH, epochs=30, max_epochs=None)
    out = tmp_path / "run"
    assert run(fixed, ["--dataset", "digits", "--epochs", "auto", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give --max-epochs N" in err and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_a_gpu_request_on_a_machine_without_one_is_refused_before_ray(tmp_path):
    """One line and nothing else: refused before Ray starts (issue 30: after 18-22 s of Ray's
    lines)."""
    out = tmp_path / "run"
    proc = search(["--smoke", "--gpus-per-trial", "0.25", "--out", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: a trial needs 1 CPU and 0.25 GPU but this machine "
                                   f"has {os.cpu_count()} CPU and 0 GPU; lower --cpus-per-trial "
                                   "/ --gpus-per-trial / --workers-per-trial, or join a "
                                   "cluster (--address)")
    assert not out.exists()


def test_engine_never_imports_a_model_internal_or_names_a_preset():
    """engine/ uses the models' public API only (DESIGN: engine/ knows nothing of models)."""
    presets = set(models.PRESETS)
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("models."), (path.name, node.module)
            if isinstance(node, ast.Compare):  # e.g. `if cfg.name == "UAE"` or `in {...}`
                names = {c.value for c in ast.walk(node)
                         if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                assert not names & presets, (path.name, ast.unparse(node))


def test_resume_takes_the_runs_own_search_scheduler_and_resources(tmp_path):
    """Flags given at --resume time do not change how the run's trials are sampled,
    scheduled or sized: a sampled run resumed without --search optuna is not repaired as a
    grid."""
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    (tmp_path / "search.json").write_text(json.dumps({
        "dataset": "digits", "epochs": 4, "seeds": [0], "search": "optuna", "samples": 7,
        "scheduler": "asha", "max_concurrent": 3,
        "resources": {"cpu": 2.0, "gpu": 0.0, "workers": 1},
        "rows": [{"label": "UAE", "config": models.PRESETS["UAE"].to_dict()}]}))
    args = parse_args(SEARCH, ["--resume", "--out", str(tmp_path), "--scheduler", "fifo",
                               "--cpus-per-trial", "1", "--samples", "2"])
    spec = load(tmp_path, SEARCH, args)
    assert list(spec.configs) == ["UAE"]
    assert (spec.algorithm, spec.samples, spec.scheduler, spec.max_concurrent,
            spec.resources.cpu) == ("optuna", 7, "asha", 3, 2.0)


def test_more_seeds_starts_only_the_seeds_the_rows_given_lack(smoke_run, tmp_path):
    """--resume --more-seeds K --rows R (on a copy of the smoke run, 8 rows x 2 seeds): R's
    seeds 0..K-1 beside its trials, its seeds 0 and 1 not run again, the other rows
    untouched; search.json, the progress line, the status and the report's notes say which
    rows have more (and that their tests took a second look)."""
    from engine.report.status import status_text
    out = Path(shutil.copytree(smoke_run[0], tmp_path / "run"))
    before = {f.parent.name: f.read_text() for f in out.glob("*/result.json")}
    more = search(["--resume", "--out", str(out), "--more-seeds", "3", "--rows", "rae"])
    assert more.returncode == 0, more.stderr[-3000:]
    assert "more seeds: RAE to 3" in more.stdout
    assert "resume: 1 trial(s) to finish: RAE seed 2" in more.stdout
    assert "8 rows x 2 seeds (RAE: 3)" in more.stdout
    trials = load_trials(out)
    assert sorted(zip(trials["label"], trials["seed"])) == sorted(
        [(label, seed) for label in UAE_ROWS for seed in (0, 1)] + [("RAE", 2)])
    assert set(trials["status"]) == {"completed"}
    assert {name: (out / name / "result.json").read_text() for name in before} == before
    saved = json.loads((out / "search.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["row_seeds"] == {"RAE": [0, 1, 2]}
    assert "not started" not in status_text(out)
    notes = (out / "report" / "table.md").read_text()
    assert "seeds 0, 1 (more for some rows: see the notes)" in notes
    assert "more seeds (--resume --more-seeds): RAE: seeds 0-2" in notes and "second look" in notes


@pytest.mark.parametrize("saved, argv, message", [
    ({}, ["--more-seeds", "3"], "--more-seeds 3 adds seeds to an existing run: give --resume"),
    ({}, ["--resume", "--more-seeds", "0"], "--more-seeds 0 must be >= 1"),
    ({}, ["--resume", "--more-seeds", "2"], "every row has seeds 0..1 already (the fewest: 2); "
                                            "give a number above 2"),
    ({"row_seeds": {"UAE": [0, 1, 2]}}, ["--resume", "--more-seeds", "3", "--rows", "UAE"],
     "each row given has seeds 0..2 already (the fewest: 3)"),
    ({"scheduler": "asha"}, ["--resume", "--more-seeds", "3"], "ASHA stopped this run's weak "
                                                               "trials"),
    ({"row_seeds": {"VAE": [0, 1, 2]}}, ["--resume", "--more-seeds", "3"],
     "'row_seeds' names 'VAE', which is not one of its rows"),
    ({"row_seeds": {"UAE": [0, True]}}, ["--resume", "--more-seeds", "3"],
     "'row_seeds' is not an object of rows' lists of integers"),
    ({}, ["--resume", "--more-seeds", "3", "--rows", "VAE"], "--rows: unknown row 'VAE'; "
                                                             "rows of this run: UAE"),
    ({"search": "optuna", "samples": 4}, ["--resume", "--more-seeds", "3"],
     "this run samples its trials (--search optuna)"),
])
def test_more_seeds_refuses_in_one_line_what_it_cannot_add(saved, argv, message, tmp_path,
                                                           capsys):
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    run_json = {"name": "ablation_uae", "dataset": "digits", "epochs": 2, "seeds": [0, 1],
                "rows": [{"label": "UAE", "config": models.PRESETS["UAE"].to_dict()}],
                **saved}
    (tmp_path / "search.json").write_text(json.dumps(run_json))
    assert run(SEARCH, [*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err
    assert json.loads((tmp_path / "search.json").read_text()) == run_json  # untouched


def test_an_unreadable_search_json_on_resume_is_one_line_and_exit_2(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    (tmp_path / "search.json").write_text('{"dataset": "digits", "rows": [')  # cut short
    assert run(SEARCH, ["--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "search.json" in err and "unreadable" in err


def test_a_space_optuna_cannot_sample_is_refused_before_ray_starts(tmp_path, capsys):
    from ray import tune

    from engine.run import Search
    study = Search(name="bad", title="bad", rows={"UAE": "UAE"},
                   space={"beta": tune.sample_from(lambda _: 1e-3)})
    out = tmp_path / "run"
    assert run(study, ["--search", "optuna", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Optuna cannot sample" in err
    assert not out.exists()


def test_studies_default_to_mnist5k_with_an_mlp_and_smoke_runs_to_digits():
    """The studies' default data set is the embedded 28x28 MNIST-5k, on which arch="auto"
    builds the MLP (EMBEDDED_ARCH); --smoke trains on the 8x8 digits unless --dataset says
    otherwise; a row's or --set's own arch, and a real data set's auto pick, are kept."""
    sys.path.insert(0, str(ROOT))
    from engine.run.spec import resolve_rows
    from searches.ablation_uae import SEARCH

    def configs(args, shape):
        return {r.label: r.config for r in resolve_rows(SEARCH, args, shape)}
    assert parse_args(SEARCH, []).dataset == "mnist5k"
    assert parse_args(SEARCH, ["--smoke"]).dataset == "digits"
    assert parse_args(SEARCH, ["--smoke", "--dataset", "mnist5k"]).dataset == "mnist5k"
    args = parse_args(SEARCH, ["--rows", "VAE,UAE"])
    rows = configs(args, (1, 28, 28))
    assert {c.arch for c in rows.values()} == {"mlp"}
    assert rows["UAE"].name == "UAE-code"  # the code's reading (the note says so)
    conv = configs(parse_args(SEARCH, ["--rows", "VAE", "--set", "arch=conv28"]), (1, 28, 28))
    assert conv["VAE"].arch == "conv28"
    real = configs(parse_args(SEARCH, ["--rows", "VAE", "--dataset", "mnist"]), (1, 28, 28))
    assert real["VAE"].arch == "auto"  # builds conv28 for 28x28, the papers' net
    assert models.build(real["VAE"], (1, 28, 28)).arch == "conv28"


def test_a_run_folder_written_before_the_run_spec_reports_and_resumes(tmp_path):
    """tests/data/run_before_spec: search.json and a completed trial's files as main wrote
    them before engine/run/spec.py (9b14986: `ablation_uae.py --smoke --rows VAE,UAE`, the UAE
    trial's folder then removed). The report reads it; --resume runs the missing trial only,
    with the run's own settings, and leaves the finished one's results as they were."""
    out = tmp_path / "run"
    shutil.copytree(ROOT / "tests/data/run_before_spec", out)
    kept = out / "VAE_seed0_b4ee8_00000" / "result.json"
    before = kept.read_bytes()
    report = subprocess.run([sys.executable, "-m", "engine", "report", str(out)], cwd=ROOT,
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "trials: 1 (1 completed)" in report.stdout
    proc = search(["--resume", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resume: 1 trial(s) to finish: UAE seed 0" in proc.stdout
    trials = load_trials(out)
    assert sorted(trials["label"]) == ["UAE", "VAE"]
    assert set(trials["status"]) == {"completed"}
    assert kept.read_bytes() == before
    saved = json.loads((out / "search.json").read_text())
    assert saved["git"].startswith("9b14986")  # a resume never rewrites the run's record


def test_a_studys_after_step_gets_the_finished_run_with_its_typed_spec():
    """FinishedRun on tests/data/run_before_spec (one completed VAE trial, no UAE trial): the
    spec's rows as search.json saved them, the trials and curves as the report reads them, each
    trial's own files found by row."""
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    from engine.run.finished import FinishedRun
    out = ROOT / "tests/data/run_before_spec"
    spec = load(out, SEARCH, parse_args(SEARCH, ["--resume", "--out", str(out)]))
    finished = FinishedRun.read(out, spec)
    saved = json.loads((out / "search.json").read_text())
    assert [r.label for r in spec.rows] == [r["label"] for r in saved["rows"]] == ["VAE", "UAE"]
    # the saved fields as saved; a field added to Config since (var_floor) at its default
    from models.config import Config
    config, written = finished.row("UAE").config.to_dict(), saved["rows"][1]["config"]
    assert {k: config[k] for k in written} == written
    assert all(config[k] == getattr(Config(), k) for k in config if k not in written)
    assert list(finished.completed["label"]) == ["VAE"]
    trial = out / "VAE_seed0_b4ee8_00000"
    assert finished.trial_files("VAE", "params.json") == [trial / "params.json"]
    assert finished.trial_files("UAE", "params.json") == []
    epochs = len((trial / "result.json").read_text().splitlines())
    assert sorted(finished.curves["epoch"].unique()) == list(range(1, epochs + 1))
    assert finished.report_path("x.png") == out / "report" / "x.png"


def test_search_json_reads_back_as_the_spec_that_wrote_it(tmp_path):
    """RunSpec.from_json is to_json's inverse (for a grid and an auto budget), and the keys
    an older run did not write take the given defaults, else the values runs had then."""
    from engine.run.spec import prepare
    from engine.run.types import RunSpec, TrialSpec
    for argv in (["--smoke"], ["--smoke", "--epochs", "auto", "--max-epochs", "5",
                               "--min-epochs", "2", "--set", "lr_schedule=plateau",
                               "--tracker", "mlflow"]):
        out = tmp_path / str(len(argv))
        spec, _ = prepare(_uae_study(), parse_args(_uae_study(), [*argv, "--out", str(out)]),
                          argv)
        back = RunSpec.from_json(json.loads(json.dumps(spec.to_json())),
                                 defaults={"samples": spec.samples})  # a grid's holds none
        assert back == spec and back.environment == spec.environment
        more = dataclasses.replace(spec, row_seeds={"UAE": (0, 1, 2)})  # --more-seeds
        assert RunSpec.from_json(json.loads(json.dumps(more.to_json())),
                                 defaults={"samples": spec.samples}) == more
        assert more.seeds_of("UAE") == (0, 1, 2) and more.seeds_of("VAE") == spec.seeds
    old = {k: v for k, v in spec.to_json().items()
           if k not in ("precision", "checkpoint_every", "scheduler", "trackers",
                        "early_stopping")}
    back = RunSpec.from_json(old, defaults={"scheduler": "asha"})
    assert (back.precision, back.checkpoint_every, back.scheduler, back.trackers,
            back.early_stopping) == ("fp32", 1, "asha", (), False)
    # a study that stops early: kept in search.json and in every trial's params, where its
    # budget is auto (a fixed budget has no rule to add it to)
    early = dataclasses.replace(_uae_study(), early_stopping=True)
    for argv, kept in ((["--smoke", "--epochs", "auto"], True), (["--smoke"], False)):
        out = tmp_path / f"early{kept}"
        spec, _ = prepare(early, parse_args(early, [*argv, "--out", str(out)]), argv)
        assert spec.early_stopping is kept and RunSpec.from_json(
            spec.to_json(), defaults={"samples": spec.samples}) == spec
        assert TrialSpec.from_params({**spec.trial_space(), "label": "UAE", "seed": 0,
                                      "config": "UAE"}).early_stopping is kept


def _uae_study():
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    return SEARCH


def test_tunes_callback_count_is_rays_own_without_importing_the_integrations():
    """Tune's telemetry counts an experiment's callbacks by importing MLflow, W&B, Comet and
    Aim for their class names (~1 s of each search's start); the engine's count is the same
    dict without those imports."""
    code = """if True:
        import sys
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
        from engine.run.ray_backend import experiment
        from engine.run.ray_backend.progress import _Progress
        from ray.air._internal import usage
        experiment._light_telemetry()
        assert usage._count_callbacks is experiment._count_callbacks
        callbacks = [JsonLoggerCallback(), experiment._CSVLogger(), CSVLoggerCallback(),
                     _Progress("val/mse", 3, 1), tune.Callback(), "not a callback"]
        ours = experiment._count_callbacks(callbacks)
        print(sorted(ours.items()), "mlflow" in sys.modules, "wandb" in sys.modules)
        from ray.air.integrations.mlflow import MLflowLoggerCallback
        callbacks.append(MLflowLoggerCallback(tracking_uri="file:/nonexistent"))
        print(experiment._count_callbacks(callbacks) == dict(experiment._RAYS_COUNT(callbacks)))
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.strip().splitlines()[-2:]
    assert first == ("[('CSVLoggerCallback', 1), ('CustomCallback', 2), "
                     "('CustomLoggerCallback', 1), ('JsonLoggerCallback', 1)] False False")
    assert second == "True"  # the same dict as Ray's, which imports them


def test_exit_with_runs_the_atexit_handlers_and_flushes_before_the_code(tmp_path):
    """A study script's end skips the interpreter's teardown, not what a normal exit does
    first: waiting for non-daemon threads, atexit handlers (logging's, a tracker's end of
    run) and the buffered output."""
    code = f"""if True:
        import atexit, sys
        from engine.run import exit_with
        import threading, time
        def late():  # a non-daemon thread still writing: a normal exit waits for it
            time.sleep(0.5)
            open({str(tmp_path / 'thread')!r}, 'w').write('thread done')
        threading.Thread(target=late).start()
        atexit.register(lambda: open({str(tmp_path / 'ended')!r}, 'w').write('atexit ran'))
        sys.stdout.write('the report, buffered, no newline')
        sys.stderr.write('a last line')
        exit_with(3)
        print('never')
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 3
    assert proc.stdout == "the report, buffered, no newline"
    assert proc.stderr == "a last line"
    assert (tmp_path / "ended").read_text() == "atexit ran"
    assert (tmp_path / "thread").read_text() == "thread done"


def test_on_first_trial_runs_its_function_once_outside_the_main_thread():
    """The report's imports start when the first trial does (not before Tune, its searcher
    and the trackers have imported theirs), once per experiment, in a daemon thread; the
    callback pickles as Tune's experiment state needs."""
    import pickle
    import threading
    from engine.run import search
    from engine.run.ray_backend import OnFirstTrial
    ran = []
    callback = OnFirstTrial(lambda: ran.append(threading.current_thread().daemon and
                                               threading.current_thread() is not
                                               threading.main_thread()))
    for i in range(3):
        callback.on_trial_start(i, [], None)
    for thread in threading.enumerate():
        if thread.name == "on first trial":
            thread.join(60)
    assert ran == [True]
    assert pickle.loads(pickle.dumps(OnFirstTrial(search._import_report))).fn \
        is search._import_report
