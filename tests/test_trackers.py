"""--tracker: MLflow, W&B and Aim as a researcher reads them afterwards, for real (MLflow's client
on the run's SQLite store, and `mlflow ui` on it over HTTP on loopback; W&B's offline run
files, tests/wandb_offline.py; Aim's SDK on the run's repository once `aim storage reindex`
has indexed it, as `aim up` does), from one search of a row with two seeds and a row named
with a "Σ"; a tracker that cannot log is refused in one line before anything starts."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from engine.run import run

sys.path.insert(0, str(Path(__file__).parent))
from wandb_offline import offline_runs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS = ["AE", "UT-VAE*-full-Σ"]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    script = tmp / "study.py"
    script.write_text(f"""import sys
from engine.run import Search, run
SEARCH = Search(name="tracked", title="trackers", seeds=2, epochs=2,
                rows={{label: label for label in {ROWS!r}}})
sys.exit(run(SEARCH))
""")
    out = tmp / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp / "wandb-cfg")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("WANDB_PROJECT", None)
    proc = subprocess.run([sys.executable, str(script), "--dataset", "digits", "--eval",
                           "reconstruction", "--out", str(out), "--tracker", "mlflow",
                           "--tracker", "wandb", "--tracker", "aim"], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _trials(out):
    """(label, seed) -> the trial's final result line."""
    trials = {}
    for f in out.glob("*/result.json"):
        last = json.loads(f.read_text().splitlines()[-1])
        trials[(last["config"]["label"], last["config"]["seed"])] = last
    return trials


def test_mlflow_has_a_run_per_trial_with_its_params_and_final_metrics(tracked):
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{tracked}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tracked"]
    runs = _trial_runs(client.search_runs([experiment.experiment_id]))
    trials = _trials(tracked)
    assert len(runs) == len(trials) == 4
    by_trial = {(r.data.tags["row"], int(r.data.tags["seed"])): r for r in runs}
    assert set(by_trial) == set(trials)
    for (label, seed), r in by_trial.items():
        last = trials[(label, seed)]
        assert r.info.run_name == f"{label} seed {seed}" and r.info.status == "FINISHED"
        assert r.data.tags["status"] == "completed" and r.data.tags["run"] == tracked.name
        # the hyperparameters: the row, seed and every resolved config field (as text)
        assert r.data.params["label"] == label and r.data.params["seed"] == str(seed)
        assert r.data.params["beta"] == str(last["config"]["config"]["beta"])
        assert r.data.params["dataset"] == "digits" and r.data.params["search"] == "tracked"
        # the final metrics are the trial's last line; Tune's bookkeeping is not a metric
        for metric in ("val/mse", "test/mse", "test/psnr", "train/loss"):
            assert r.data.metrics[metric] == pytest.approx(last[metric], rel=1e-12), metric
        assert not {"trial_id", "pid", "done"} & set(r.data.metrics)
        assert not [m for m in r.data.metrics if m.startswith("config/")]
        history = client.get_metric_history(r.info.run_id, "val/mse")
        assert [m.step for m in history] == [1, 2]  # a value per epoch, at its epoch


def _trial_runs(runs):
    """The trials' MLflow runs, not the search's own (their parent)."""
    return [r for r in runs if "trial_key" in r.data.tags]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """`mlflow ui` on loopback, as the README starts it, from this Python's environment; its
    REST API read with urllib. Stopped (its process group: mlflow starts uvicorn's) on exit."""

    def __init__(self, store: str, log: Path):
        self.port, self.log = _free_port(), log
        cli = Path(sys.executable).with_name("mlflow")
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(cli), "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self):
        deadline = time.monotonic() + 600  # a busy CI machine: as long as it takes, bounded
        while True:
            try:
                if self.get("/health", raw=True) == b"OK":
                    return self
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.5)

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def get(self, route: str, body: dict | None = None, raw: bool = False, **query):
        url = f"http://127.0.0.1:{self.port}{route}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(
            url, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            data = r.read()
        return data if raw else json.loads(data)


def test_mlflow_ui_serves_the_runs_with_their_pictures_report_and_exported_model(tracked,
                                                                                 tmp_path):
    """The README's `mlflow ui --backend-store-uri sqlite:///<run>/mlflow.db` answers on
    loopback with the UI's page and, through its REST API, the search's run (the report's
    files) with a child run per trial (its params, metrics, tags and pictures), and the model
    `vae-ablations export` wrote of a trial; the files are in <run>/mlartifacts."""
    from engine.__main__ import main
    assert main(["export", str(tracked), str(tmp_path / "ae0"), "--row", "AE", "--seed",
                 "0"]) == 0
    trials = _trials(tracked)
    with _Server(f"sqlite:///{tracked}/mlflow.db", tmp_path / "mlflow-ui.log") as ui:
        assert b"<html" in ui.get("/", raw=True)  # the UI's own page, not a missing build
        experiment = ui.get("/api/2.0/mlflow/experiments/get-by-name",
                            experiment_name="tracked")["experiment"]
        assert experiment["artifact_location"] == str(tracked / "mlartifacts")
        runs = ui.get("/api/2.0/mlflow/runs/search", {
            "experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        (search,) = [r for r, t in zip(runs, tags) if t.get("search_run") == tracked.name]
        search_id = search["info"]["run_id"]
        assert search["info"]["run_name"] == tracked.name
        assert search["info"]["status"] == "FINISHED"

        def files(run_id, path):
            listed = ui.get("/api/2.0/mlflow/artifacts/list", run_id=run_id, path=path)
            return {Path(f["path"]).name for f in listed.get("files", [])}
        assert {"table.md", "table.csv", "trials.csv", "qualitative.png"} <= files(search_id,
                                                                                   "report")
        children = [(r, t) for r, t in zip(runs, tags) if "trial_key" in t]
        assert len(children) == len(trials) == 4
        for r, t in children:
            label, seed = t["row"], int(t["seed"])
            last, run_id = trials[(label, seed)], r["info"]["run_id"]
            assert t["mlflow.parentRunId"] == search_id and t["status"] == "completed"
            assert r["info"]["run_name"] == f"{label} seed {seed}"
            params = {p["key"]: p["value"] for p in r["data"]["params"]}
            assert params["label"] == label and params["seed"] == str(seed)
            assert params["beta"] == str(last["config"]["config"]["beta"])
            metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
            assert metrics["test/mse"] == pytest.approx(last["test/mse"], rel=1e-12)
            assert files(run_id, "pictures") == {"qualitative.png", "qualitative.npz"}
            png = ui.get("/get-artifact", raw=True, run_id=run_id,
                         path="pictures/qualitative.png")
            assert png.startswith(b"\x89PNG")
            exported = (label, seed) == ("AE", 0)
            assert files(run_id, "model") == ({"model.json", "weights.pt", "densities.pt"}
                                              if exported else set())
            # the files themselves: in the run folder
            assert (tracked / "mlartifacts" / run_id / "artifacts" / "pictures" /
                    "qualitative.png").is_file()


def test_wandb_offline_has_a_run_per_trial_grouped_by_row_so_it_bands_the_seeds(tracked):
    runs = offline_runs(tracked)
    trials = _trials(tracked)
    assert len(runs) == len(trials) == 4
    groups = {}
    for r in runs:
        label, seed = r["config"]["label"], r["config"]["seed"]
        groups.setdefault(r["group"], set()).add(seed)
        last = trials[(label, seed)]
        assert r["name"] == f"{label} seed {seed}" and r["project"] == "tracked"
        assert r["config"]["beta"] == last["config"]["config"]["beta"]
        assert r["config"]["dataset"] == "digits"
        assert r["summary"]["test/mse"] == pytest.approx(last["test/mse"], rel=1e-12)
        assert [h["epoch"] for h in r["history"] if "val/mse" in h] == [1, 2]
        assert not {"trial_id", "pid", "done"} & set(r["summary"])
    # one group per row, holding both its seeds: W&B bands them
    assert groups == {f"{tracked.name}/{label}": {0, 1} for label in ROWS}


def _aim_runs(run_dir):
    """The Aim runs of a run folder as Aim's SDK reads them: Aim indexes finished runs only
    when `aim up` (its UI) or `aim storage reindex` runs, and its reader lists indexed ones."""
    import aim
    cli = Path(sys.executable).with_name("aim")
    subprocess.run([str(cli), "storage", "--repo", str(run_dir), "reindex", "--yes"],
                   check=True, capture_output=True, timeout=300)
    return list(aim.Repo(str(run_dir)).iter_runs())


def _aim_history(run, metric):
    """(steps, values) of an Aim run's metric."""
    (m,) = [m for m in run.metrics() if m.name == metric]
    frame = m.dataframe()
    return frame["step"].tolist(), frame["value"].tolist()


def test_aim_has_a_run_per_trial_with_its_params_and_final_metrics(tracked):
    runs = _aim_runs(tracked)
    trials = _trials(tracked)
    assert len(runs) == len(trials) == 4
    by_trial = {(r["hparams"]["label"], r["hparams"]["seed"]): r for r in runs}
    assert set(by_trial) == set(trials)
    for (label, seed), r in by_trial.items():
        last = trials[(label, seed)]
        assert r.name == f"{label} seed {seed}" and r.experiment == "tracked"
        assert set(r.props.tags) == {label, tracked.name, "digits"}
        assert r["status"] == "completed"
        assert r["hparams"]["beta"] == last["config"]["config"]["beta"]
        assert r["hparams"]["dataset"] == "digits" and r["hparams"]["search"] == "tracked"
        names = {m.name for m in r.metrics()}
        assert not {"trial_id", "pid", "done"} & names
        assert not [m for m in names if m.startswith(("config/", "__system__", "ray/"))]
        for metric in ("val/mse", "test/mse", "test/psnr", "train/loss"):
            steps, values = _aim_history(r, metric)
            assert values[-1] == pytest.approx(last[metric], rel=1e-12), metric
        assert _aim_history(r, "val/mse")[0] == [1, 2]  # a value per epoch, at its epoch


def test_a_tracker_that_cannot_log_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    # W&B without a key, a login or offline mode
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc of `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    out = tmp_path / "run"
    assert run(SEARCH, ["--smoke", "--tracker", "wandb", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "WANDB_API_KEY" in err and "offline" in err, err
    assert not out.exists()
    # an unknown one is argparse's refusal
    with pytest.raises(SystemExit) as e:
        run(SEARCH, ["--tracker", "comet"])
    assert e.value.code == 2 and "--tracker" in capsys.readouterr().err
    # a tracker whose package is missing (Aim, made missing by hiding it from the import
    # system)
    monkeypatch.setitem(sys.modules, "aim", None)
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "aim" else _find_spec(name, *a))
    assert run(SEARCH, ["--smoke", "--tracker", "aim", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'vae-ablations[aim]'" in err, err
    assert not out.exists()


_find_spec = __import__("importlib.util").util.find_spec


class _Trial:
    """What Ray's logger callbacks read of a Tune trial."""

    def __init__(self, trial_id, folder, label="AE", seed=0):
        self.trial_id, self.local_path, self.path = trial_id, str(folder), str(folder)
        self.config = {"label": label, "seed": seed, "search": "tracked", "dataset": "digits",
                       "epochs": 3, "metric": "val/mse", "mode": "min",
                       "config": {"beta": 1.0, "latent_dim": 8}}
        self.last_result = {}

    def __str__(self):
        return f"trial_{self.trial_id}"


def _run_folder(tmp_path):
    run = tmp_path / "tracked-digits-1"
    run.mkdir()
    (run / "search.json").write_text(json.dumps({"name": "tracked"}))
    return run


def _die_and_resume(make, run, first, again, diverging=None):
    """Two epochs of `first` under one driver that dies (the trial ends failed), then a third
    epoch of `again` (its folder under a new Tune trial id) under a new driver, the
    callbacks made by make(run folder); `diverging`: a trial of the first driver whose epoch
    1 has a NaN val/mse."""
    callback = make(str(run))
    callback.setup()
    for trial in [first] + [diverging] * (diverging is not None):
        callback.log_trial_start(trial)
    for epoch in (1, 2):
        callback.log_trial_result(epoch, first, {"epoch": epoch, "val/mse": 1.0 / epoch})
    if diverging is not None:
        callback.log_trial_result(1, diverging, {"epoch": 1, "val/mse": float("nan"),
                                                 "train/loss": 3.0})
        diverging.last_result = {"status": "diverged", "epoch": 1}
        callback.log_trial_end(diverging)
    first.last_result = {"status": "running", "epoch": 2}
    callback.log_trial_end(first, failed=True)  # the search died here, say
    resumed = make(str(run))  # a new driver
    resumed.setup()
    resumed.log_trial_start(again)
    resumed.log_trial_result(3, again, {"epoch": 3, "val/mse": 0.25, "test/mse": 0.2})
    again.last_result = {"status": "completed", "epoch": 3}
    resumed.log_trial_end(again)


def test_a_trial_that_resume_continues_goes_on_in_its_tracked_run(tmp_path):
    """--resume continues a trial in its old folder under a new Tune trial id: MLflow finds
    its run by the trial's key (run folder / trial folder) and logs on in it; W&B's id is a
    hash of the same key, so W&B continues its run too."""
    from mlflow import MlflowClient

    from engine.run.ray_backend import _mlflow, _trial_key
    run = _run_folder(tmp_path)
    folder = run / "AE_seed0_aaaaa_00000"
    first, again = _Trial("aaaaa_00000", folder), _Trial("bbbbb_00000", folder)
    assert _trial_key(str(run), first) == _trial_key(str(run), again)
    assert _trial_key(str(run), first) != _trial_key(str(run), _Trial("x", run / "AE_seed1"))
    _die_and_resume(_mlflow, run, first, again)
    client = MlflowClient(f"sqlite:///{run}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tracked"]
    (only,) = _trial_runs(client.search_runs([experiment.experiment_id]))
    assert only.info.status == "FINISHED" and only.data.tags["status"] == "completed"
    assert [m.step for m in client.get_metric_history(only.info.run_id, "val/mse")] == [1, 2, 3]
    assert only.data.metrics["test/mse"] == 0.2


def test_a_trial_that_resume_continues_goes_on_in_its_aim_run(tmp_path):
    """Aim finds the run by its name (row and seed: one trial of the run folder's repository)
    and tracks on in it; a diverged epoch's NaN is left out of the run (as Ray's Aim callback
    does), its status says "diverged"."""
    from engine.run.ray_backend import _aim
    run = _run_folder(tmp_path)
    folder = run / "AE_seed0_aaaaa_00000"
    first, again = _Trial("aaaaa_00000", folder), _Trial("bbbbb_00000", folder)
    _die_and_resume(_aim, run, first, again,
                    diverging=_Trial("aaaaa_00001", run / "AE_seed1_aaaaa_00001", seed=1))
    runs = {r.name: r for r in _aim_runs(run)}
    assert set(runs) == {"AE seed 0", "AE seed 1"}
    continued, diverged = runs["AE seed 0"], runs["AE seed 1"]
    assert continued["status"] == "completed" and diverged["status"] == "diverged"
    assert continued["trial_id"] == "bbbbb_00000"
    assert _aim_history(continued, "val/mse") == ([1, 2, 3], [1.0, 0.5, 0.25])
    assert _aim_history(continued, "test/mse") == ([3], [0.2])
    assert {m.name for m in diverged.metrics()} == {"epoch", "train/loss"}
