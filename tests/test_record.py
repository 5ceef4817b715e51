"""The reproducibility record in search.json: versions, Python, host, GPUs, times, and the
uncommitted changes of a dirty tree (read from a real git repository the test makes)."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import torch

from engine.run.record import environment, uncommitted
from engine.run.spec import _resumed

ROOT = Path(__file__).resolve().parents[1]


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_the_record_names_the_versions_python_and_host():
    env = environment(ROOT)
    assert env["packages"]["torch"] == importlib.metadata.version("torch")
    assert env["packages"]["ray"] == importlib.metadata.version("ray")
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["torch_cuda"] == torch.version.cuda and isinstance(env["gpus"], list)
    assert env["started"].endswith("+00:00")


def test_uncommitted_changes_are_kept_and_a_clean_tree_or_no_repository_has_none(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-qm", "one")
    assert uncommitted(repo) is None
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    dirty = uncommitted(repo)
    assert "-x = 1" in dirty["diff"] and "+x = 2" in dirty["diff"]
    assert dirty["untracked"] == ["new.py"]
    assert uncommitted(tmp_path / "nothing") is None  # no such folder: no record, no error
    plain = tmp_path / "plain"
    plain.mkdir()
    assert uncommitted(plain) is None  # a folder outside any repository


def test_an_installed_copy_inside_a_users_repository_records_neither_its_commit_nor_diff(
        tmp_path):
    """A virtual environment inside a user's own (dirty) repository: the engine's folder is
    no checkout of its own, so that repository's commit and diff are not recorded as the
    engine's; its installed version is."""
    from engine.run.spec import git_commit
    repo = tmp_path / "project"
    site = repo / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "mine.py").write_text("x = 1\n")
    _git(repo, "add", "mine.py")
    _git(repo, "commit", "-qm", "theirs")
    (repo / "mine.py").write_text("x = 2\n")  # dirty
    assert uncommitted(repo) is not None  # the repository's own record
    assert uncommitted(site) is None
    assert git_commit(site).startswith("installed vae-ablations ")
    assert not git_commit(repo).startswith("installed") and git_commit(repo).endswith(
        "+uncommitted")


def test_a_resume_keeps_the_first_start_and_appends_its_own():
    first = {"started": "2026-01-01T00:00:00+00:00", "host": "a"}
    once = _resumed(first, {"started": "2026-01-02T00:00:00+00:00", "host": "b"})
    twice = _resumed(once, {"started": "2026-01-03T00:00:00+00:00", "host": "c"})
    assert twice["started"] == first["started"] and twice["host"] == "a"
    assert [r["host"] for r in twice["resumes"]] == ["b", "c"]
    assert first == {"started": "2026-01-01T00:00:00+00:00", "host": "a"}  # not changed
    assert [r["host"] for r in _resumed(None, {"host": "b"})["resumes"]] == ["b"]


def test_a_search_writes_the_record_and_its_end_time(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_search import search
    out = tmp_path / "run"
    proc = search(["--smoke", "--rows", "RAE", "--eval", "reconstruction",
                   "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    env = json.loads((out / "search.json").read_text())["environment"]
    assert env["packages"]["torch"] and env["host"] and env["started"]
    ended = json.loads((out / "finished.json").read_text())["ended"]
    assert ended >= env["started"]
