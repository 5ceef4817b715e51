"""The tool installed as a user installs it: a wheel of this checkout (not an editable install)
in a fresh virtual environment (its dependencies borrowed from the test's own environment
through a .pth file, so nothing is downloaded), then its console script run from another
folder: `vae-ablations run` trains a study with its run folder under ./runs of the working
directory, `report` and `export` read it, and a study's script runs from the checkout without
any sys.path edit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp / "dist").glob("vae_ablations-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    # the dependencies (torch, Ray, ...) of this environment; not this checkout, whose
    # editable install is a .pth of this site folder, which a path added this way never runs
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   timeout=600)
    work = tmp / "work"  # the user's working directory: no checkout here
    work.mkdir()
    return venv, work


def _run(cmd, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",
                                                            "VAE_ABLATIONS_STORAGE")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          **kw)


def test_the_console_script_runs_a_study_into_the_working_directory_and_reads_it(fresh):
    venv, work = fresh
    where = _run([str(venv / "bin" / "python"), "-c", "import engine, searches; "
                  "print(engine.__file__); print(searches.__file__)"], work)
    assert where.returncode == 0, where.stderr[-2000:]
    for path in where.stdout.split():  # the wheel's copies, not this checkout's
        assert Path(path).is_relative_to(venv), path
    cli = str(venv / "bin" / "vae-ablations")
    listed = _run([cli, "studies"], work)
    assert listed.returncode == 0 and "ablation_uae " in listed.stdout
    assert "two_stage " in listed.stdout and "codebook " in listed.stdout
    proc = _run([cli, "run", "ablation_uae", "--smoke", "--rows", "VAE", "--epochs", "1",
                 "--eval", "reconstruction"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = work / "runs" / "ablation_uae-digits-1"  # ./runs of the working directory
    assert (run / "finished.json").is_file() and (run / "report" / "table.md").is_file()
    assert not list(venv.rglob("runs"))  # nothing inside the installed package
    report = _run([cli, "report", str(run)], work)
    assert report.returncode == 0 and "| VAE " in report.stdout, report.stderr[-2000:]
    export = _run([cli, "export", str(run), "best"], work)  # (test_export loads such folders)
    assert export.returncode == 0, export.stderr[-2000:]
    assert json.loads((work / "best" / "model.json").read_text())["config"]["name"] == "VAE"
    assert (work / "best" / "weights.pt").stat().st_size > 0
    wrong = _run([cli, "run", "ablation_ua"], work)
    assert wrong.returncode == 2 and "did you mean 'ablation_uae'" in wrong.stderr


def test_a_study_script_runs_from_the_checkout_with_the_installed_engine(fresh):
    venv, work = fresh
    proc = _run([str(venv / "bin" / "python"), str(ROOT / "searches" / "two_stage.py"),
                 "--help"], work)  # (its `after` step: a study module with more than a grid)
    assert proc.returncode == 0 and "--dataset" in proc.stdout, proc.stderr[-2000:]
    for path in (ROOT / "searches").glob("*.py"):
        assert "sys.path" not in path.read_text(), path


def test_the_wheel_lists_every_package_of_the_checkout():
    """pyproject.toml names its packages one by one: a package added to the code and not to
    that list is missing from every installed copy (the editable install hides it)."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("models", "engine", "searches")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found == listed, f"add to pyproject.toml: {sorted(found - listed)}; " \
                            f"remove: {sorted(listed - found)}"
