"""Multi-worker correctness and faults on this machine: a 2-worker DDP trial (gloo on CPU)
that loses a worker ends exactly as the same workers uninterrupted, which step as one worker
trained on the combined batches; a trial whose worker process is killed mid-trial continues
from its last checkpoint. (The driver killed mid-search: tests/test_search.py; a lost node:
tests/test_cluster.py.)"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine.report import load_trials
from engine.run.trial import Session, load_state, run_trial
from engine.run.types import TrialSpec

from test_search import ENV, EVERY_EPOCH, ROOT  # the engine tests' subprocess environment
from test_trial import same_state


def final_state(folder: Path, epoch: int) -> dict:
    states = [load_state(str(p.parent)) for p in folder.rglob("checkpoint_*/state.pt")]
    return next(s for s in states if s["epoch"] == epoch)


def session_processes(sid: int, name: str) -> list[int]:
    """PIDs of this search's processes (its session: the driver and the Ray it started,
    never another run's) whose command line, as Ray titles its workers, holds `name`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and os.getsid(int(proc.name)) == sid
                    and name in (proc / "cmdline").read_bytes().decode(errors="replace")):
                pids.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


def run_and_kill(args: list[str], progress, victim) -> tuple[subprocess.Popen, str, dict]:
    """Run the search in its own session; once `progress(run folder)` returns a dict (how
    far a trial got, read from its files), SIGKILL the pid `victim(search pid, that dict)`
    names (None: not yet), read again while that process is stopped. Returns the finished
    search, its stderr and that dict. Whatever of the search is left (the driver, the Ray it
    started) is killed at the end, passed or not."""
    out = Path(args[args.index("--out") + 1])
    proc = subprocess.Popen([sys.executable, str(ROOT / "searches/ablation_uae.py"),
                             *EVERY_EPOCH, *args], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        killed, deadline = {}, time.time() + 400
        while not killed and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            seen = progress(out)
            pid = victim(proc.pid, seen) if seen else None
            if pid:
                # freeze it and read again how far it got: on a busy machine the line read
                # above can be many epochs old by now (even the trial's last), and a killed
                # process must be known to die mid-trial, at the epoch the test records
                os.kill(pid, signal.SIGSTOP)
                seen = progress(out)
                if seen and victim(proc.pid, seen) == pid:
                    os.kill(pid, signal.SIGKILL)
                    killed = seen
                else:  # it finished, or was stopped mid-line: let it go on, look again
                    os.kill(pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=600)
        return proc, stderr, killed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def last_line(folder_glob: str, after: int):
    """progress: the last result line of the trial folder matching `folder_glob` once it
    reports an epoch >= `after` and is still running."""
    def progress(out: Path) -> dict | None:
        for f in out.glob(f"{folder_glob}/result.json"):
            lines = f.read_text().splitlines()
            last = json.loads(lines[-1]) if lines and lines[-1].endswith("}") else {}
            if last.get("epoch", 0) >= after and last.get("status") == "running":
                return last
        return None
    return progress


def ddp_checkpoint(out: Path) -> dict | None:
    """progress: the epoch of a DDP trial's first Ray Train checkpoint (Tune's result.json
    hears of a TorchTrainer's epochs only in batches, so it cannot tell when to kill)."""
    for path in out.glob("*/ddp/checkpoint_*/state.pt"):
        with contextlib.suppress(Exception):  # still being written
            return {"epoch": load_state(str(path.parent))["epoch"]}
    return None


def ddp_reference_rank(rank: int, params: dict, folder: str) -> None:
    """One of the 2 ranks of a DDP run of `params` never interrupted, in plain
    torch.distributed (gloo, rendezvous through a file in `folder`) with the Session that
    engine/run/ray_backend/trainables.py's _ddp_worker builds; rank 0 keeps every epoch's checkpoint as
    <folder>/epoch<epoch>. (Run by torch.multiprocessing, so it lives at module level.)"""
    torch.set_num_threads(max(1, int(params["resources"]["cpu"])))  # as _ddp_worker
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=2)
    try:
        def report(metrics: dict, checkpoint: str | None) -> None:
            if checkpoint:
                shutil.copytree(checkpoint, f"{folder}/epoch{metrics['epoch']}")
        run_trial(TrialSpec.from_params(params), Session(
            report=report, trial_dir=f"{folder}/rank{rank}", rank=rank, world=2,
            wrap=torch.nn.parallel.DistributedDataParallel,
            all_reduce=lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM)))
    finally:
        dist.destroy_process_group()


def ddp_reference(params: dict, folder: Path) -> dict[int, dict]:
    """{epoch: checkpoint state} of an uninterrupted 2-worker DDP run of `params`."""
    folder.mkdir(parents=True)
    mp.start_processes(ddp_reference_rank, args=(params, str(folder)), nprocs=2,
                       start_method="spawn")
    return {e: load_state(str(folder / f"epoch{e}")) for e in range(1, params["epochs"] + 1)}


def relative_drift(a: dict, b: dict) -> float:
    """The largest ||a - b|| / ||b|| over the weight tensors of two states."""
    return max(((a["model"][k] - w).norm() / w.norm()).item() for k, w in b["model"].items())


def test_two_ddp_workers_end_with_one_workers_parameters_even_after_losing_one(tmp_path):
    """A 2-worker TorchTrainer trial, one of whose Ray Train workers is SIGKILLed after its
    first checkpoint: Ray Train (FailureConfig max_failures=1) restarts the workers from the
    newest checkpoint, and the trial ends bit for bit where the same 2 workers end
    uninterrupted (plain torch.distributed, no Ray), whatever epoch the kill fell in; a
    restart from scratch, a lost optimizer state or generator would change the weights.
    That uninterrupted run steps as one worker on the whole batch: RAE (deterministic, no
    batch statistics: an MLP on digits) with batches of 75, which split 38 + 37; without
    weighting each worker's loss by its share, the two workers' step would differ from one
    worker's. The workers sum in another order than one worker, and Adam can turn that
    rounding into lr-sized steps once the two trajectories part, at a step that depends on
    the machine's matrix kernels: measured with AVX-512 MKL, 2.7e-7 after epoch 1, 4.5e-7
    after 2, 6e-7 after 3, then (parting at steps 53-56) 3.5e-4 after 4 and 2.0e-3 after 5;
    with MKL_ENABLE_INSTRUCTIONS=AVX2 still 7.8e-7 after 5; with SGD no growth. So that
    comparison is made after epoch 2, where the unweighted split is 2.5e-2 off. 5 epochs of
    a 1024-wide MLP leave time to kill in."""
    out, epochs = tmp_path / "run", 5
    proc, stderr, killed = run_and_kill(
        ["--dataset", "digits", "--rows", "RAE", "--seeds", "1", "--epochs", str(epochs),
         "--workers-per-trial", "2",
         "--set", "batch_size=75", "hidden=1024", "--eval", "reconstruction", "--out", str(out)],
        ddp_checkpoint, lambda sid, seen: max(session_processes(sid, "RayTrainWorker"),
                                              default=None))
    assert killed and killed["epoch"] < epochs, "nothing was killed mid-trial"
    assert proc.returncode == 0, stderr[-3000:]
    trial_dir = next(out.glob("RAE_seed0_*"))
    assert (trial_dir / "ddp").is_dir()  # the TorchTrainer's own run, named in the trial
    assert list((out / "tensorboard" / "RAE" / "seed0").iterdir())  # rank 0 wrote TensorBoard
    lines = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    restored = {line.get("restored_from_epoch") for line in lines} - {None}
    assert len(restored) == 1 and 1 <= restored.pop() <= killed["epoch"] + 1  # not scratch
    ddp = final_state(trial_dir, epochs)
    params = json.loads((trial_dir / "params.json").read_text())

    # the restarted trial ends exactly as the same workers uninterrupted: weights, Adam's
    # state, the shuffling generator and every metric (the training terms' means over both
    # workers' examples, the validation and test errors)
    reference = ddp_reference(params, tmp_path / "uninterrupted")
    assert same_state(ddp, reference[epochs]), relative_drift(ddp, reference[epochs])

    # those workers step as one worker on the whole batch, up to the rounding of their sums
    reports = []
    run_trial(TrialSpec.from_params({**params, "epochs": 2}), Session(
        report=lambda m, f: reports.append(load_state(f) if f else None),
        trial_dir=str(tmp_path / "one")))
    one = reports[-1]
    assert one["epoch"] == 2
    drift = relative_drift(reference[2], one)
    assert drift < 1e-4, drift  # measured 4.5e-7; the unweighted split: 2.5e-2
    for key in ("train/loss", "train/recon", "val/mse"):  # means over every example
        assert abs(reference[2]["metrics"][key] - one["metrics"][key]) <= 1e-5 * abs(
            one["metrics"][key]), key
    # and the table's test error is the one rank 0 evaluated on the final model
    trials = load_trials(out)
    assert len(trials) == 1 and trials["status"][0] == "completed"
    assert trials["test/mse"][0] == ddp["metrics"]["test/mse"]


def test_a_killed_trial_process_continues_from_its_last_checkpoint(tmp_path):
    """SIGKILL the process running a trial after its 3rd epoch: Tune (FailureConfig
    max_failures=1) restarts it from its newest checkpoint; its result lines then go on
    from there, no epoch is trained twice from scratch, and the other trial is untouched."""
    out = tmp_path / "run"
    proc, stderr, killed = run_and_kill(
        ["--dataset", "digits", "--rows", "RAE", "--seeds", "2", "--epochs", "40", "--eval",
         "reconstruction", "--out", str(out)], last_line("RAE_seed0_*", 3), lambda sid, line: line["pid"])
    assert killed, "the trial finished before it could be killed"
    assert proc.returncode == 0, stderr[-3000:]
    trials = load_trials(out)
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    lines = [json.loads(line) for line in
             next(out.glob("RAE_seed0_*/result.json")).read_text().splitlines()]
    epochs = [line["epoch"] for line in lines]
    pids = [line["pid"] for line in lines]
    assert killed["pid"] in pids and pids[-1] != killed["pid"]  # another process finished it
    restart = pids.index(pids[-1])
    # it restarted at the epoch after a checkpoint it had written (every epoch here), not at 1
    assert 1 < epochs[restart] <= killed["epoch"] + 2
    assert lines[-1]["restored_from_epoch"] == epochs[restart] - 1
    assert epochs[-1] == 40 and set(epochs) == set(range(1, 41))
    other = [json.loads(line)["epoch"] for line in
             next(out.glob("RAE_seed1_*/result.json")).read_text().splitlines()]
    assert other == list(range(1, 41))
