"""The cluster: cluster.yaml against the schema and the validator that ship with Ray; a search
on a two-node Ray cluster on this machine (its trials land on both nodes and all reach the
report; a node lost mid-search has its trials continued on the other node from their
checkpoints); the cluster address and storage checks; what keeps a local run's Ray private
(token authentication, no dashboard, checkpoints that cannot run code)."""
from __future__ import annotations

import json
import os
import pickle
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from engine.report import load_trials
from engine.run import run

ROOT = Path(__file__).resolve().parent.parent


# --- cluster.yaml ---

def cluster_yaml() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def validate(config: dict) -> None:
    """What `ray up` checks before it talks to the cloud: the schema that ships with Ray, then
    Ray's own preparation (the provider's defaults merged in) and validation."""
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))


def test_cluster_yaml_passes_rays_schema_and_validator():
    validate(cluster_yaml())


def test_cluster_yaml_gives_what_a_user_relies_on():
    config = cluster_yaml()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    # the head runs the drivers: no GPU, on a CPU instance type, and no trial
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    # autoscaling GPU worker types: none while idle, some when trials ask for GPUs; one of
    # them with several GPUs in a node, where DDP's gradients do not cross the network
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    for worker in workers:
        assert worker["resources"]["GPU"] >= 1
        assert worker["node_config"]["InstanceType"][0] in "gp"
        assert worker["min_workers"] == 0 and 0 < worker["max_workers"] <= config["max_workers"]
    assert sorted(w["resources"]["GPU"] for w in workers) == [1, 4]
    # every node installs this project (and so its dependencies) from its checkout
    setup = "\n".join(config["setup_commands"])
    assert "git clone" in setup and "pip install --quiet -e ~/vae-ablations" in setup
    # every node mounts the shared file system before Ray starts, and Ray (so every driver
    # and trial) gets it as the default storage and data root
    assert "mount -t nfs4" in setup and "/mnt/shared" in setup
    for start in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = "\n".join(start)
        assert "VAE_ABLATIONS_STORAGE=/mnt/shared/runs" in start
        assert "VAE_DATA_ROOT=/mnt/shared/data" in start
        assert "RAY_AUTH_MODE=token" in start  # token authentication on every node
    # the token reaches every node; the dashboard listens on the head's localhost only
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    head_start = "\n".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    text = (ROOT / "cluster.yaml").read_text()
    assert "0.0.0.0" not in text and "IpPermissions" not in text  # no port opened to all
    assert text.count("FILL IN") >= 5  # region, zone, AMI, EFS, repository


@pytest.mark.parametrize("change, error", [
    (lambda c: c.update(max_worker=c.pop("max_workers")), jsonschema.ValidationError),
    (lambda c: c["available_node_types"]["gpu_worker"].update(
        min_worker=c["available_node_types"]["gpu_worker"].pop("min_workers")),
     jsonschema.ValidationError),
    (lambda c: c.update(setup_command=c.pop("setup_commands")), jsonschema.ValidationError),
    (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=-1),
     jsonschema.ValidationError),
    (lambda c: c.update(head_node_type="gpu-head"), ValueError),
])
def test_a_broken_cluster_yaml_is_refused(change, error):
    config = cluster_yaml()
    change(config)
    with pytest.raises(error):
        validate(config)


# --- bad cluster address or storage: one line, exit 2, nothing started ---

def closed_port() -> int:
    """A port on this machine where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, message", [
    (lambda tmp: ["--address", f"127.0.0.1:{closed_port()}"], "nothing answers at 127.0.0.1"),
    (lambda tmp: ["--address", "ray://127.0.0.1:10001"], "Ray Client"),
    (lambda tmp: ["--address", "head-node"], "HOST:PORT"),
    (lambda tmp: ["--storage", str(tmp / "no" / "such" / "runs")], "does not exist"),
    (lambda tmp: ["--storage", "s3://bucket/runs"], "bucket URIs are not supported"),
    (lambda tmp: ["--storage", str(tmp / "a-file")], "is a file"),
    (lambda tmp: ["--storage", str(tmp), "--out", str(tmp / "run")], "give one"),
])
def test_a_bad_address_or_storage_is_one_line_and_exit_2_before_ray_starts(
        argv, message, tmp_path, capsys):
    import ray
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    (tmp_path / "a-file").write_text("")
    before = sorted(tmp_path.iterdir())
    assert run(SEARCH, ["--smoke", *argv(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err, err
    assert sorted(tmp_path.iterdir()) == before  # no run folder, no storage folder
    assert not ray.is_initialized()


def test_the_storage_variable_is_checked_like_the_flag(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from searches.ablation_uae import SEARCH
    monkeypatch.setenv("VAE_ABLATIONS_STORAGE", str(tmp_path / "no" / "runs"))
    assert run(SEARCH, ["--smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: $VAE_ABLATIONS_STORAGE ") and "does not exist" in err


# --- a two-node Ray cluster on this machine ---

@pytest.fixture(scope="module")
def cluster():
    """A head node with 1 CPU, token authentication on, in a Ray temp folder of its own (so
    that no other Ray on this machine finds it as "auto", nor it them)."""
    from ray.cluster_utils import Cluster
    from ray._raylet import Config
    tmp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # short: Ray's socket paths are limited
    env = {"RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    Config.initialize("")  # this process reads the auth mode again (its GCS client checks nodes)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        yield c
    finally:
        c.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        Config.initialize("")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def worker(cluster):
    """A second node with 1 CPU: two 1-CPU trials can only run at once on the two nodes."""
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield node
    if node in cluster.worker_nodes:
        cluster.remove_node(node)


def start_search(cluster, storage: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "searches/ablation_uae.py"), "--checkpoint-every", "1",
         "--dataset", "digits",
         "--rows", "RAE", "--seeds", "2", "--eval", "reconstruction", "--storage", str(storage), "--address",
         cluster.address, *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)


def result_lines(run_dir: Path) -> dict[str, list[dict]]:
    """Each trial folder's result lines (whole lines only: a trial may be writing)."""
    out = {}
    for f in run_dir.glob("*/result.json"):
        lines = []
        for text in f.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                pass
        out[f.parent.name] = lines
    return out


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
    assert proc.returncode == 0, output[-4000:]
    return output


def test_a_search_on_two_nodes_runs_trials_on_both_and_reports_them_all(cluster, worker,
                                                                         tmp_path):
    proc = start_search(cluster, tmp_path, "--epochs", "2")
    finish(proc)
    [run_dir] = tmp_path.iterdir()  # --storage holds the run folder
    assert run_dir.name == "ablation_uae-digits-1"
    lines = result_lines(run_dir)
    nodes = {line["node_id"] for trial in lines.values() for line in trial}
    assert nodes <= {cluster.head_node.node_id, worker.node_id}
    # each node has 1 CPU: trials that ran at the same time ran on both nodes. Whether Tune
    # placed the second before the first ended depends on load (on a busy CI machine the
    # first can finish first), so the check is the invariant, not the timing
    (a, b) = [(t[0]["timestamp"] - t[0]["time_total_s"], t[-1]["timestamp"], t[0]["node_id"])
              for t in lines.values()]
    if a[0] + 1 < b[1] and b[0] + 1 < a[1]:  # overlapped by more than the 1-s timestamps
        assert a[2] != b[2]
    trials = load_trials(run_dir)
    assert sorted(trials["seed"]) == [0, 1] and set(trials["status"]) == {"completed"}
    assert trials["test/mse"].notna().all()
    assert set((run_dir / "report" / "trials.csv").read_text().splitlines()[0].split(",")) >= {
        "label", "seed", "test/mse"}


def test_a_node_lost_mid_search_has_its_trials_finish_on_the_other(cluster, worker,
                                                                   tmp_path):
    # 20 epochs of 40 batches (0.1-0.3 s each here): the poll below has 2-6 s to find the
    # worker's trial between its first and its last epoch (6 epochs of 20 batches were too
    # quick to be caught for certain on a faster machine; 8 of 40 left about a second)
    epochs = 20
    proc = start_search(cluster, tmp_path, "--epochs", str(epochs), "--set", "batch_size=32")
    lost = None
    deadline = time.monotonic() + 240
    while lost is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        for name, lines in result_lines(tmp_path / "ablation_uae-digits-1").items():
            # a trial on the worker that has a checkpoint (every epoch) and epochs left
            if lines and lines[-1]["node_id"] == worker.node_id and lines[-1]["epoch"] < epochs:
                lost = name
                cluster.remove_node(worker)  # every process of that node, killed
                break
    assert lost is not None, "no trial was seen on the worker node with epochs left"
    finish(proc)
    run_dir = tmp_path / "ablation_uae-digits-1"
    lines = result_lines(run_dir)[lost]
    on_worker = [x["epoch"] for x in lines if x["node_id"] == worker.node_id]
    on_head = [x["epoch"] for x in lines if x["node_id"] == cluster.head_node.node_id]
    # continued on the head from its last checkpoint, not from scratch, to the end
    assert on_worker and on_head and on_head[0] > 1 and on_head[-1] == epochs
    assert on_head[0] <= on_worker[-1] + 1  # no epoch skipped
    assert lines[-1]["status"] == "completed"
    trials = load_trials(run_dir)  # each trial exactly once, both finished
    assert sorted(trials["seed"]) == [0, 1] and set(trials["status"]) == {"completed"}
    assert trials["test/mse"].notna().all()


# --- what keeps a local run private ---

SERVER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from engine.run import ray_backend
ray_backend.init(None)
import ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled

def listening(pid):  # the TCP ports a process listens on, from /proc (Linux)
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in open(table).read().splitlines()[1:]:
            f = row.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.append(int(f[1].rsplit(":", 1)[1], 16))
    return ports

node = ray._private.worker.global_worker.node
print(json.dumps({
    "gcs": node.gcs_address, "token": is_token_auth_enabled(),
    "webui": node.address_info.get("webui_url"),
    "dashboard": [{"args": p.process.args, "listens": listening(p.process.pid)}
                  for p in node.all_processes.get("dashboard", [])]}), flush=True)
sys.stdin.read()  # until the test is done
"""

CLIENT = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", None, timeout=10)
    print("ALLOWED")
except Exception as e:
    print("REFUSED", type(e).__name__)
"""


def test_a_local_run_has_no_dashboard_and_refuses_callers_without_its_token(tmp_path):
    # Ray's gRPC ports listen on every interface of the machine (Ray has no setting to bind
    # them to localhost): the token is what keeps another machine out, so it is tested here
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="vr", dir="/tmp")
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        assert info["token"] and not info["webui"]
        # Ray still runs a dashboard process for usage statistics, without its web server
        for dashboard in info["dashboard"]:
            assert "--disable-frontend" in dashboard["args"] and dashboard["listens"] == []

        def call(**extra):
            return subprocess.run([sys.executable, "-c", CLIENT, info["gcs"]],
                                  env={**env, **extra}, capture_output=True, text=True,
                                  timeout=120).stdout.strip()
        assert call(RAY_AUTH_MODE="disabled") == "REFUSED AuthenticationError"
        assert call(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32) == (
            "REFUSED AuthenticationError")
        # with the token that ray.init made (~/.ray/auth_token), the same call goes through
        assert call(RAY_AUTH_MODE="token") == "ALLOWED"
    finally:
        server.stdin.close()
        server.wait(timeout=120)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


class RunsCode:
    """Unpickling this calls Path.touch: what a tampered checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    import torch
    from engine.run.trial import STATE_FILE, load_state, newest_state
    marker = tmp_path / "code-ran"
    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    torch.save({"epoch": 1, "model": {}, "payload": RunsCode(marker)}, folder / STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_state(str(folder))
    assert newest_state(str(tmp_path)) is None  # skipped like a broken one, never loaded
    assert not marker.exists()
    torch.load(folder / STATE_FILE, weights_only=False)  # the control: it does run code
    assert marker.exists()
