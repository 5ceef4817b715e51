"""Ray itself: starting or joining it (token authentication kept on), leaving it, the
cluster's resources and nodes, and a list of calls as Ray Tasks (`evaluate RUN`)."""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import ray

from engine.run import console


def ray_environment() -> None:
    """Ray's and Tune's settings for this engine, set where Ray starts (init), before it does:
    the raylets this process starts inherit them, Tune reads its own when the experiment runs,
    and a trial's worker gets RAY_CHDIR_TO_TRIAL_DIR from Tune. Nothing is set by importing
    the engine."""
    # Our own TensorBoard writer logs richer summaries than Tune's automatic TBX logger, so the
    # automatic loggers are off and the JSON/CSV ones (which the reports read) are added back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative paths keep meaning the repo's
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    # Checkpointing every epoch with num_to_keep forces a small experiment-state snapshot each
    # time (so a restore never points at a deleted checkpoint); it costs ~10 ms, so no warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ctrl-C is ours (run_experiment's _Interrupt): Tune's own handler ends the run as if it had
    # finished, and nothing after fit() could tell an interrupted search from a complete one
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Ray starts its workers, i.e. our trials, at nice 15: beside any busy process of normal
    # priority a trial gets about 1/30 of a core (a 2-seed search on a 2-node test cluster took
    # 31 s, 249 s with two busy loops beside it). The trials are the work the user asked for, so
    # they run at the user's priority unless RAY_worker_niceness says otherwise. It reaches the
    # raylets that this process starts (ray.init, ray.cluster_utils.Cluster), not a joined cluster.
    os.environ.setdefault("RAY_worker_niceness", "0")


def init(address: str | None, give_up=None) -> None:
    """Attach to a running cluster (`address`, e.g. "auto" or "HEAD_IP:6379") or start Ray on
    this machine only, with the dashboard off and token authentication on.

    Ray >= 2.59 turns token authentication on for a cluster that ray.init starts (the token in
    ~/.ray/auth_token, made on first use) unless RAY_AUTH_MODE says otherwise. It matters: on
    Linux, Ray's gRPC servers (GCS, raylet, workers) listen on every interface of the machine
    and Ray has no setting to bind them to localhost only, so the token is what keeps another
    machine on the network from running code here. A user who turned it off is told so."""
    ray_environment()
    if ray.is_initialized():
        return
    if address:
        # ray.init can wait for minutes on an address where a GCS answered the probe but
        # does not let this driver in; one line and exit 2 instead
        timer = threading.Timer(JOIN_TIMEOUT_S, _give_up, args=(address, give_up))
        timer.daemon = True
        timer.start()
        try:
            ray.init(address=address, log_to_driver=True)
        finally:
            timer.cancel()
        return
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        print(f"warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: Ray's ports on this "
              "machine accept anyone who reaches them; unset it to keep token authentication",
              file=console.err(), flush=True)
    elif not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        make_token_file()  # the token Ray would read from ~/.ray/auth_token
    # "local": a new Ray on this machine, even where $RAY_ADDRESS names a cluster (e.g. the
    # job API's tunnel that docs/cluster.md exports for `ray job submit`)
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    global _STARTED_HERE
    _STARTED_HERE = True
    private_token_file()


_STARTED_HERE = False  # whether init started Ray on this machine (not joined a cluster)


def shutdown() -> None:
    """Leave Ray: its log thread is joined, so no trial process's last words, which Ray
    forwards to this driver's stderr as they arrive, can come after the driver's own last line
    (on a busy machine they came seconds late, after "the disk is full").

    A Ray that init started here is stopped at once: Ray stops its processes one after another
    and gives each up to a second to end, and its autoscaler's monitor (which a one-machine
    Ray does not use) takes all of it, for on SIGTERM it reports its own end to the GCS that
    Ray has stopped before it; it is killed first."""
    global _STARTED_HERE
    node = getattr(ray._private.worker, "_global_node", None)  # private: absent, Ray's own way
    monitors = getattr(node, "all_processes", {}).get("monitor", []) if _STARTED_HERE else []
    for info in monitors:
        try:
            info.process.kill()
        except (AttributeError, OSError):
            pass
    ray.shutdown()
    _STARTED_HERE = False


TOKEN_FILE = Path("~/.ray/auth_token")


def make_token_file(path: Path = TOKEN_FILE) -> None:
    """The token file where there is none, whole and the owner's alone from its first byte.

    Ray makes a missing one with open("w") then write: two searches (or two test workers)
    that start Ray together on a machine without one could each make a token, and a cluster
    whose driver read one while its raylet read the other would not let its own workers in.
    Here it is written aside and linked into place, so the first link wins and everyone reads
    that one. Any failure leaves it to Ray, as before."""
    path = path.expanduser()
    if path.exists():
        return
    import secrets  # the token as Ray makes one: 256 random bits in hex
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            os.link(aside, path)
        finally:
            aside.unlink(missing_ok=True)
    except OSError:  # FileExistsError: another made it first, which is the point
        pass


def private_token_file(path: Path = TOKEN_FILE) -> None:
    """Ray writes the token it makes on first use with the umask's mode (0644): anyone on the
    machine could read it and so pass the authentication. Make it the owner's alone."""
    path = path.expanduser()
    try:
        if path.is_file() and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)
    except OSError as e:  # e.g. a token file of another user's: say so, go on
        print(f"warning: cannot make {path} private ({e.strerror}): chmod 600 it",
              file=console.err(), flush=True)


JOIN_TIMEOUT_S = float(os.environ.get("VAE_ABLATIONS_JOIN_TIMEOUT_S", "120"))


def _give_up(address: str, cleanup=None) -> None:
    if cleanup is not None:  # e.g. give back the run folder the search claimed
        cleanup()
    print(f"error: --address {address}: Ray did not let this driver join within "
          f"{JOIN_TIMEOUT_S:g} s; check that it is the head's GCS address (ray status there "
          "prints it) and that this machine reaches every port of the head",
          file=console.err(), flush=True)
    os._exit(2)  # noqa: SLF001  (ray.init holds the main thread; nothing has started)


def node_id() -> str:
    """The Ray node this process runs on (a trial's results record where it ran)."""
    return ray.get_runtime_context().get_node_id()


def cluster_resources() -> dict[str, float]:
    """The CPUs and GPUs of the cluster's nodes now."""
    return {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def max_cluster_resources() -> dict[str, float] | None:
    """The CPUs and GPUs an autoscaling cluster can grow to, where its autoscaler reported
    them to the GCS (KubeRay, autoscaler v2); None where Ray does not know (e.g. `ray up`'s
    autoscaler v1)."""
    try:
        from ray._private.state import state
        most = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001  (a private API: absent or changed means unknown)
        return None
    return {k: float(v) for k, v in most.items() if k in ("CPU", "GPU")} if most else None


def map_tasks(fn, calls: list[tuple], cpu: float = 1.0, gpu: float = 0.0, done=None) -> list:
    """fn(*args) for each args of `calls`, each a Ray Task of `cpu` CPUs and `gpu` GPUs, so a
    cluster runs them in parallel on its nodes as their resources allow. The results in the
    order of `calls`; a task whose worker died gives its exception instead, so one failure
    costs only its own result. done(i, result) is called as each finishes."""
    remote = ray.remote(num_cpus=cpu, num_gpus=gpu)(fn)
    index = {remote.remote(*args): i for i, args in enumerate(calls)}
    results: list = [None] * len(calls)
    pending = list(index)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            try:
                results[index[ref]] = ray.get(ref)
            except ray.exceptions.RayError as e:  # the worker or its node was lost
                results[index[ref]] = e
            if done is not None:
                done(index[ref], results[index[ref]])
    return results


