"""An interrupted, concurrent or resumed search never lies, never clobbers, never runs foreign
code (issue 12): Ctrl-C is exit 130 and a run that --resume finishes with each epoch once;
two searches started together take two folders; --resume reads no pickle from the run
folder; files honour the umask; a full disk is one line; bad input is refused before Ray."""
from __future__ import annotations

import contextlib
import csv
import http.server
import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import files
from engine.report import load_trials
from engine.run.cli import BadInput, parse_args
from engine.run.folder import claim_run_folder
from engine.run import run

from test_search import ENV, EVERY_EPOCH, ROOT, search

sys.path.insert(0, str(ROOT))
from searches.ablation_uae import SEARCH  # noqa: E402


class RunsCode:
    """A pickle that runs a shell command when loaded: what a colleague could plant in a run
    folder on shared storage."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def epochs_of(folder: Path) -> list[int]:
    return [json.loads(x)["epoch"] for x in (folder / "result.json").read_text().splitlines()]


def csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def start_search(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "searches/ablation_uae.py"),
                             *EVERY_EPOCH, *args],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for_a_completed_and_a_running_trial(out: Path, proc: subprocess.Popen) -> None:
    """Until one trial has completed and another has reported an epoch but not its last: an
    interrupt then finds a trial of each kind, however slowly the next trial starts on a busy
    machine (waiting for the first trial alone let CI's interrupt land before the second had
    written anything)."""
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        texts = [f.read_text() for f in out.glob("*/result.json")]
        if (any('"completed"' in t for t in texts)
                and any(t.strip() and '"completed"' not in t for t in texts)):
            return
        time.sleep(0.05)
    raise AssertionError("no trial completed while another ran before the search ended")


@pytest.mark.parametrize("target, signum, code", [("driver", signal.SIGINT, 130),
                                                   ("process group", signal.SIGINT, 130),
                                                   ("driver", signal.SIGTERM, 143)])
def test_ctrl_c_is_an_interrupted_run_that_resume_finishes_with_each_epoch_once(
        tmp_path, target, signum, code):
    """SIGINT after the first trial completed (to the driver, as `kill -INT`; to its process
    group, as Ctrl-C in a terminal): exit 130, no finished.json, a line telling to --resume,
    and SIGTERM to the driver (`kill`, a batch scheduler) alike with exit 143 (Ray's driver
    died of it in 3 s, rc -6, with C++ stack lines and no resume line);
    and no trial called "stopped early" (no scheduler stopped any). Then --resume, with
    planted pickles that would run code if anything unpickled them, finishes every trial:
    each epoch once in result.json, progress.csv of one set of columns, each trial's line
    printed once, and no planted pickle ran."""
    out, epochs = tmp_path / "run", 15  # the other 3 trials take > 5 s: time to interrupt
    args = ["--smoke", "--epochs", str(epochs), "--seeds", "2", "--rows", "VAE,RAE",
            "--max-concurrent", "1", "--eval", "reconstruction", "--out", str(out)]
    proc = start_search(args)
    try:
        wait_for_a_completed_and_a_running_trial(out, proc)
        if target == "driver":
            os.kill(proc.pid, signum)
        else:
            os.killpg(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, stderr[-3000:]
    assert not (out / "finished.json").exists()
    assert f"--resume --out {out}" in stderr.splitlines()[-1]
    assert stderr.splitlines()[-1].startswith(
        "terminated:" if signum == signal.SIGTERM else "interrupted:")
    assert "stopped early" not in stdout and "search finished" not in stdout
    trials = load_trials(out)
    assert "completed" in set(trials["status"]) and "unfinished" in set(trials["status"])
    assert "stopped early" not in set(trials["status"])
    if target == "driver":
        return  # the resume is the same for both: checked once

    marker = tmp_path / "pwned"
    planted = [*out.rglob("*.pkl"), out / "tuner.pkl"]
    for path in planted:
        path.write_bytes(pickle.dumps(RunsCode(marker)))
    first = json.loads((out / "search.json").read_text())
    resumed = search(["--resume", "--out", str(out)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists(), "--resume unpickled a file of the run folder"
    # search.json re-saved with the resume's record (issue 30): the first start's kept
    saved = json.loads((out / "search.json").read_text())
    assert [r["git"] for r in saved["environment"]["resumes"]] == [first["git"]]
    assert {k: v for k, v in saved.items() if k != "environment"} == {
        k: v for k, v in first.items() if k != "environment"}
    assert "resumes" not in first["environment"]
    trials = load_trials(out)
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert (out / "finished.json").exists()
    for folder in (out / t for t in trials["trial"]):
        assert epochs_of(folder) == list(range(1, epochs + 1)), folder.name
        header, rows = csv_rows(folder / "progress.csv")
        assert all(len(r) == len(header) for r in rows), folder.name
        assert [int(r[header.index("epoch")]) for r in rows] == list(range(1, epochs + 1))
    done_lines = [x for x in resumed.stdout.splitlines() if x.startswith("[")]
    assert len(done_lines) == len({x.split(":")[0].split("] ")[1] for x in done_lines})


def test_two_searches_started_together_take_two_run_folders(tmp_path):
    storage = tmp_path / "runs"
    storage.mkdir()
    args = ["--smoke", "--rows", "RAE", "--epochs", "1", "--eval", "reconstruction",
            "--storage", str(storage)]
    procs = [start_search(args), start_search(args)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in results]
    folders = sorted(p.name for p in storage.iterdir())
    assert folders == ["ablation_uae-digits-1", "ablation_uae-digits-2"]
    for name in folders:
        saved = json.loads((storage / name / "search.json").read_text())
        assert saved["name"] == "ablation_uae"
        trials = load_trials(storage / name)
        assert len(trials) == 1 and list(trials["status"]) == ["completed"]


def test_claiming_a_run_folder_is_atomic(tmp_path):
    """Eight claims at once of the next numbered folder get eight folders; two of one --out:
    one gets it, the other is told another search took it."""
    runs = tmp_path / "runs"
    args = parse_args(SEARCH, ["--dataset", "digits", "--storage", str(runs)])
    got, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        got.append(claim_run_folder(SEARCH, args, runs / "ablation_uae-digits-1"))
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in got) == [f"ablation_uae-digits-{n}" for n in range(1, 9)]
    assert all(json.loads((p / "search.json").read_text()) == {"claimed": True} for p in got)

    out = tmp_path / "same"
    args = parse_args(SEARCH, ["--out", str(out)])
    claim_run_folder(SEARCH, args, out)
    with pytest.raises(BadInput, match="another search took this folder"):
        claim_run_folder(SEARCH, args, out)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_files_are_written_with_the_umasks_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        files.write_json_atomic(tmp_path / "search.json", {"a": 1})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives: the mode to match
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "search.json").stat().st_mode)
    assert mode == 0o666 & ~mask == stat.S_IMODE(plain.stat().st_mode)
    assert json.loads((tmp_path / "search.json").read_text()) == {"a": 1}


def test_rays_token_file_is_made_private(tmp_path):
    from engine.run.ray_backend import private_token_file
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    private_token_file(token)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    private_token_file(tmp_path / "absent")  # no token yet: nothing to do, no error


def test_rays_token_file_is_made_whole_and_private_once_by_searches_starting_together(tmp_path):
    """Ray writes a missing token with open("w") then write: two starts together could each
    make one. make_token_file links a whole, private file into place: whatever the order of
    16 threads starting at once, one token, 64 hex digits, 0600, nothing left aside."""
    import re
    import threading

    from engine.run.ray_backend import make_token_file
    token = tmp_path / ".ray" / "auth_token"
    gate = threading.Barrier(16)

    def start():
        gate.wait()
        make_token_file(token)
    threads = [threading.Thread(target=start) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = token.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert [p.name for p in token.parent.iterdir()] == ["auth_token"]
    make_token_file(token)  # there already: kept
    assert token.read_text() == first


NICENESS = """
import os, sys
sys.path.insert(0, sys.argv[1])
from engine.run import ray_backend
ray_backend.init(None)
import ray
print(ray.get(ray.remote(lambda: os.nice(0)).remote()))
"""


def test_trials_run_at_the_users_priority(tmp_path):
    # Ray's default of nice 15 left a trial ~1/30 of a core beside one busy process
    env = {k: v for k, v in ENV.items() if k != "RAY_worker_niceness"}
    done = subprocess.run([sys.executable, "-c", NICENESS, str(ROOT)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == os.nice(0)  # the driver's own


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A small file system of its own at `path` (root may mount one here, as in CI)."""
    path.mkdir()
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"this machine lets no test mount a file system: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_disk_that_fills_stops_the_search_with_one_line_and_resume_continues(tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        out = disk / "run"
        args = ["--smoke", "--rows", "VAE,RAE", "--epochs", "5", "--eval", "reconstruction",
                "--out", str(out)]
        full = search(args)
        assert full.returncode == 1, full.stderr[-3000:]
        err = full.stderr.strip().splitlines()
        assert err[-1] == (f"error: the disk of {out} is full: the search stopped; free "
                           f"space, then --resume --out {out} continues it")
        # the driver's own output holds no traceback (Tune's ENOSPC and EOFError ones were
        # hundreds of lines); a trial process's last words, which Ray forwards prefixed
        # "(<task> pid=N)" as it dies, are not the driver's to silence
        driver = [x for x in err if not re.search(r"\(\w+ pid=\d+", x)]
        assert not [x for x in driver if "Traceback" in x or "EOFError" in x], driver
        assert not (out / "finished.json").exists()
        subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
        resumed = search(["--resume", "--out", str(out)])
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        trials = load_trials(out)
        assert len(trials) == 2 and set(trials["status"]) == {"completed"}
        for folder in (out / t for t in trials["trial"]):
            assert epochs_of(folder) == list(range(1, 6))


# --- bad input, refused before Ray starts ---

def test_storage_turning_read_only_stops_the_search_with_one_line(tmp_path, capsys):
    """Issue 30, item 9: a run's storage remounted read-only mid-run printed 437 lines with 10
    tracebacks. A trial's EROFS in Tune's log (as ENOSPC's) is swallowed once and stops the
    experiment, and the driver says it in one line, exit 1, as for a full disk."""
    import errno
    import logging
    from engine.run import ray_backend
    from engine.run.search import _finish
    stop = ray_backend._Interrupt()
    error = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "t" / "result.json"))
    record = logging.LogRecord("ray.tune", logging.ERROR, __file__, 1, "Trial failed", None,
                               (OSError, error, None))
    assert not stop.stop_all() and stop.disk_filter(record) is False
    assert stop.read_only and not stop.disk_full and stop.stop_all()
    later = logging.LogRecord("ray.tune.analysis.experiment_analysis", logging.WARNING,
                              __file__, 1, "could not read", None, None)
    assert stop.disk_filter(later) is False  # Tune's complaints after it: not shown either
    assert not ray_backend.read_only(str(tmp_path))
    assert _finish(None, tmp_path, "read-only", None) == 1
    err = capsys.readouterr().err
    assert err == (f"error: the storage of {tmp_path} turned read-only: the search stopped; "
                   f"make it writable, then --resume --out {tmp_path} continues it\n")


def refused(argv: list[str], capsys) -> str:
    assert run(SEARCH, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    return err


HOLD = ("import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from engine.run.folder import lock_run_folder; lock_run_folder(Path(sys.argv[2])); "
        "print('locked', flush=True); time.sleep(600)")


def _run_folder_without_ray(out: Path) -> Path:
    """A run folder as a search leaves it before its first trial: claimed, search.json
    written."""
    from engine.run.spec import prepare
    argv = ["--smoke", "--out", str(out)]
    spec, out = prepare(SEARCH, parse_args(SEARCH, argv), argv)
    spec.save(out)
    return out


def test_a_run_folder_in_use_is_refused_naming_its_holder_and_freed_when_it_dies(
        tmp_path, capsys):
    """Issue 30: two --resume of one run at once trained a trial twice. A search holds the
    run folder's lock (fcntl.flock on run.lock) while it runs; another gets one line naming
    the holder's PID and host, exit 2, before Ray, nothing written; the lock goes with the
    holder's process, even a SIGKILLed one (no stale lock to clear by hand)."""
    from engine.run.folder import lock_run_folder
    out = _run_folder_without_ray(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ROOT), str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        err = refused(["--resume", "--out", str(out)], capsys)
        assert "is in use by another search (pid" in err and f"pid {holder.pid} on " in err
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
        with pytest.raises(BadInput, match="in use by another search"):
            lock_run_folder(out)
    finally:
        holder.kill()
        holder.wait()
    os.close(lock_run_folder(out))  # free again: the kernel let go of it with the holder


def test_a_link_planted_as_the_run_lock_is_refused_not_followed(tmp_path, capsys):
    out = _run_folder_without_ray(tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "run.lock").symlink_to(victim)
    err = refused(["--resume", "--out", str(out)], capsys)
    assert f"{out / 'run.lock'} is a symbolic link" in err and victim.read_text() == "keep"
    from engine.run.folder import lock_run_folder  # the lock itself never follows one either
    with pytest.raises(BadInput, match="run.lock: cannot open the run's lock.*plain file"):
        lock_run_folder(out)
    assert victim.read_text() == "keep"


@pytest.mark.parametrize("argv", [["--precision", "int8"], ["--bogus"], ["--seeds"]])
def test_a_flag_error_is_one_line_pointing_to_help(argv, capsys):
    """Issue 30: argparse printed its 18-line usage block before each flag error."""
    with pytest.raises(SystemExit) as e:
        parse_args(SEARCH, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith("error: ") and err.rstrip().endswith("--help)")


def test_densities_that_leave_a_table_column_empty_are_refused(tmp_path, capsys):
    """Issue 30: `--eval-set densities=` left the GMM-10 column "—" with no note."""
    for given in ("densities=", "densities=prior"):
        err = refused(["--smoke", "--eval-set", given, "--out", str(tmp_path / "run")], capsys)
        assert "eval/fid_sample_gmm10 samples from gmm10; include gmm10" in err
        assert not (tmp_path / "run").exists()
    args = parse_args(SEARCH, ["--eval-set", "densities=prior,gmm10"])
    from engine.run.cli import eval_settings
    assert eval_settings(SEARCH, args).densities == ("prior", "gmm10")


def test_an_out_holding_files_but_no_run_is_named_as_such(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    err = refused(["--smoke", "--out", str(tmp_path)], capsys)
    assert err == (f"error: --out {tmp_path} is not empty and holds no run (2 entries: data, "
                   "notes.txt); choose an empty or new folder")


@pytest.mark.parametrize("planted", ["VAE_seed0_x/progress.csv", "VAE_seed0_x/checkpoint_000000",
                                     "report"])
def test_links_planted_in_a_run_folder_are_refused_not_written_through(tmp_path, capsys,
                                                                        planted):
    """Issue 30: --resume truncated progress.csv and result.json planted as links to files
    outside the run and wrote a 2 MB state.pt into a victim folder; a link at report/ got the
    report's files. --resume and `report` now refuse a run folder holding a link, one line
    naming it, before writing anything."""
    from engine.__main__ import main as cli
    out = _run_folder_without_ray(tmp_path / "run")
    (out / "VAE_seed0_x").mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (out / planted).symlink_to(victim / "keep.txt" if "." in planted else victim)
    err = refused(["--resume", "--out", str(out)], capsys)
    assert err.startswith(f"error: --resume: {out / planted} is a symbolic link (to {victim}")
    assert cli(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out / planted} is a symbolic link") and "remove it" in err
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "keep"


def test_the_trackers_own_links_are_not_planted_links(tmp_path):
    """W&B links wandb/latest-run in the run folder itself (the tracker test's run failed on
    it): the trackers' folders are theirs; a link anywhere else, or a link named wandb, is
    still found."""
    from engine.files import first_link
    (tmp_path / "wandb" / "offline-run-1").mkdir(parents=True)
    (tmp_path / "wandb" / "latest-run").symlink_to("offline-run-1")
    (tmp_path / ".aim").mkdir()
    (tmp_path / "AE_seed0_x").mkdir()
    assert first_link(tmp_path) is None
    (tmp_path / "AE_seed0_x" / "result.json").symlink_to(tmp_path / "elsewhere")
    assert first_link(tmp_path) == tmp_path / "AE_seed0_x" / "result.json"
    other = tmp_path / "other"
    other.mkdir()
    (other / "wandb").symlink_to(tmp_path)
    assert first_link(other) == other / "wandb"


def test_a_row_given_twice_is_refused(tmp_path, capsys):
    """Issue 30: `--rows VAE,VAE` trained seed 0 twice into one row (n=2) beside an empty
    "VAE [2]"."""
    err = refused(["--smoke", "--rows", "VAE,RAE,VAE", "--out", str(tmp_path / "run")], capsys)
    assert "'VAE' given twice" in err and "--seeds" in err
    assert not (tmp_path / "run").exists()


def test_rows_are_matched_in_any_case_and_with_greek_letters_spelled_out(tmp_path, capsys):
    """Issue 31: `--rows 'UT-VAE*-full-Sigma'` (how TensorBoard's and HParams' ASCII columns
    spell it) was refused, and names were case-sensitive. The exact name still wins (VAE is
    not VAE*), two spellings of one row are one row given twice, and --help lists the rows."""
    from engine.run.spec import resolve_rows
    args = parse_args(SEARCH, ["--smoke", "--rows", "ut-vae*-full-sigma,rae-gp,vae,VAE*"])
    rows = resolve_rows(SEARCH, args, (1, 8, 8))
    assert [r.label for r in rows] == ["UT-VAE*-full-Σ", "RAE-GP", "VAE", "VAE*"]
    err = refused(["--smoke", "--rows", "UT-VAE*-full-Sigma,UT-VAE*-full-Σ", "--out",
                   str(tmp_path / "run")], capsys)
    assert "'UT-VAE*-full-Σ' given twice" in err
    err = refused(["--smoke", "--rows", "VAE**", "--out", str(tmp_path / "run")], capsys)
    assert "unknown row 'VAE**'" in err and "UT-VAE*-full-Σ" in err
    assert not (tmp_path / "run").exists()
    from engine.run.spec import _match_row
    with pytest.raises(BadInput, match="'ab' could be any of A-B, A_B; give its exact name"):
        _match_row("ab", ["A-B", "A_B"], "toy")
    assert _match_row("A_B", ["A-B", "A_B"], "toy") == "A_B"
    with pytest.raises(SystemExit):
        parse_args(SEARCH, ["--help"])
    assert "VAE, RAE, RAE-L2, RAE-GP, VAE*, UT-VAE*, UT-VAE*-full-Σ, UAE" in " ".join(
        capsys.readouterr().out.split())


def test_resuming_a_run_of_another_study_is_refused_naming_its_study(tmp_path, capsys):
    """Issue 30: it ran, then failed in the study's own report step."""
    from searches.sigma_points import SEARCH as OTHER
    out = _run_folder_without_ray(tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run(OTHER, ["--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --resume: {out} is a run of ablation_uae, not of sigma_points; "
                   f"resume it with its own study (vae-ablations run ablation_uae --resume "
                   f"--out {out})")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_an_out_whose_parent_is_missing_is_refused(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "run"
    err = refused(["--out", str(out)], capsys)
    assert "parent folder" in err and str(tmp_path / "no" / "such") in err
    assert not (tmp_path / "no").exists()


def test_an_out_on_a_read_only_file_system_is_refused(tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        err = refused(["--out", str(ro / "run")], capsys)
        assert str(ro) in err and "not writable" in err


_ROW = {"label": "VAE", "config": {}}


@pytest.mark.parametrize("saved", [[], None, {"rows": []},
                                   {"dataset": "digits", "epochs": 2, "seeds": [0], "rows": []},
                                   {"dataset": "digits", "epochs": 2, "seeds": [0],
                                    "rows": ["VAE"]},
                                   # hand-edited (issue 30): tracebacks before
                                   {"dataset": "digits", "epochs": 0, "seeds": [0],
                                    "rows": [_ROW]},
                                   {"dataset": "digits", "epochs": 2, "seeds": [0],
                                    "rows": [_ROW], "evaluation": {"metrics": ["bogus"]}},
                                   {"dataset": "digits", "epochs": 2, "seeds": [0],
                                    "rows": [_ROW], "min_epochs": -5}])
def test_a_search_json_of_the_wrong_shape_on_resume_is_one_line(tmp_path, capsys, saved):
    (tmp_path / "search.json").write_text(json.dumps(saved))
    err = refused(["--resume", "--out", str(tmp_path)], capsys)
    assert "search.json" in err and "not a search's record" in err


def test_a_report_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    from engine.__main__ import main as cli
    out = _run_folder_without_ray(tmp_path / "run")
    (out / "report").write_text("not a folder")
    assert cli(["report", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {out / 'report'} is a file, where the "
                                               "report's folder goes; move it away")


def _two_trials(out: Path) -> list[Path]:
    """Two completed trials of the run's first two rows, as a search writes their files."""
    saved = json.loads((out / "search.json").read_text())
    folders = []
    for i, row in enumerate(saved["rows"][:2]):
        folder = out / f"{row['label']}_seed0_0000{i}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(
            {"label": row["label"], "seed": 0, "config": row["config"], "dataset": "digits",
             "epochs": 2, "metric": "val/mse", "mode": "min"}))
        (folder / "result.json").write_text("".join(json.dumps(
            {"epoch": e, "status": "completed" if e == 2 else "running", "trial_id": f"t{i}",
             "val/mse": 0.05 / e, "test/mse": 0.05 / e, "time_total_s": 1.0 * e}) + "\n"
            for e in (1, 2)))
        folders.append(folder)
    return folders


def _edit_json(path: Path, edit) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _edit_last_line(path: Path, key: str, value) -> None:
    lines = path.read_text().splitlines()
    lines[-1] = json.dumps({**json.loads(lines[-1]), key: value})
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, damage, said", [
    ("result.json", lambda f: _edit_last_line(f / "result.json", "epoch", "two"),
     "line 2: 'epoch' is 'two', not a whole number >= 0"),
    ("result.json", lambda f: _edit_last_line(f / "result.json", "val/mse", "abc"),
     "line 2: 'val/mse' is 'abc', not a number"),
    ("result.json", lambda f: _edit_last_line(f / "result.json", "status", 5),
     "line 2: 'status' is 5, not text"),
    ("params.json", lambda f: _edit_json(f / "params.json", lambda d: {**d, "seed": "x"}),
     "'seed' is 'x', not a whole number >= 0"),
    ("params.json", lambda f: _edit_json(f / "params.json", lambda d: {**d, "epochs": -5}),
     "'epochs' is -5, not a whole number >= 1"),
    ("params.json", lambda f: _edit_json(f / "params.json", lambda d: {
        **d, "config": {**d["config"], "latent_dim": "abc"}}),
     "'config': latent_dim='abc' must be an integer >= 1"),
    ("params.json", lambda f: _edit_json(f / "params.json", lambda d: {**d, "config": [1]}),
     "'config' is a JSON list, not an object"),
    ("params.json", lambda f: _edit_json(f / "params.json", lambda d: [1, 2]),
     "a JSON list, not an object"),
])
def test_a_damaged_trial_file_is_one_line_and_costs_the_report_that_trial_only(
        tmp_path, capsys, name, damage, said):
    """Issue 30: a hand-edited or damaged trial file (a result line with "epoch": "two", a
    params.json of the wrong types) was a traceback in `report` and `--resume`, and a report
    that took epochs -5 or latent_dim "abc" without a word. Now `report` leaves that trial
    out, naming the file and the field in its notes, and reports the others; `--resume`
    (which decides from these files what to continue) refuses in one line, before Ray,
    nothing written."""
    from engine.__main__ import main as cli
    from engine.report import load_trials
    out = _run_folder_without_ray(tmp_path / "run")
    damaged, fine = _two_trials(out)
    damage(damaged)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    err = refused(["--resume", "--out", str(out)], capsys)
    assert f"--resume: {damaged / name}: {said}; mend the file" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing written
    assert cli(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"left out of every table and figure, damaged" in printed
    assert f"{damaged / name}: {said}" in printed
    trials = load_trials(out)
    assert list(trials["trial"]) == [fine.name] and list(trials["status"]) == ["completed"]


def test_an_address_where_no_gcs_answers_is_refused_naming_what_answered(tmp_path, capsys):
    """An HTTP server (as the dashboard's 8265 through a tunnel) accepts the connection, so
    only the protocol tells it from Ray's GCS (gRPC: HTTP/2)."""
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # stderr is the refusal's alone
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        err = refused(["--address", f"127.0.0.1:{server.server_port}", "--out",
                       str(tmp_path / "run")], capsys)
    finally:
        server.shutdown()
    assert "not Ray's GCS" in err and "HTTP/1" in err and "6379" in err


def test_joining_an_address_that_answers_but_never_lets_ray_in_is_bounded(tmp_path):
    """A server that speaks HTTP/2 (so the probe takes it for a GCS) and then says nothing:
    ray.init would wait for minutes; the driver gives up after its join timeout (here 5 s)
    with one line and exit 2, and leaves no run folder behind."""
    import socket
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame
            held.append(conn)  # and silence
    threading.Thread(target=serve, daemon=True).start()
    out = tmp_path / "run"
    try:
        proc = search(["--smoke", "--address", f"127.0.0.1:{listener.getsockname()[1]}",
                       "--out", str(out)], env={"VAE_ABLATIONS_JOIN_TIMEOUT_S": "5"},
                      timeout=300)
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "did not let this driver join within 5 s" in err[0]
    assert not out.exists()


def test_a_local_ray_that_does_not_start_is_one_line_that_says_so(capsys):
    """A local Ray that timed out starting (a niced search on a loaded machine) was reported
    as "cannot join Ray at --address None": no --address was given."""
    from types import SimpleNamespace
    from engine.run.search import connect
    from engine.run.types import Resources

    def init(address, give_up=None):
        raise RuntimeError("The current node timed out during startup.\nmore")
    assert connect(None, Resources(), SimpleNamespace(init=init)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address None" not in err
    assert err.startswith("error: cannot start Ray on this machine: The current node timed out")
