"""The reproducibility record a run keeps in its search.json ("environment"): what produced
its numbers besides the code's commit (RunSpec.git): the packages' versions, Python, the
driver's host and GPUs, the start time, and the uncommitted changes where the tree was dirty.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

import torch

# the packages whose versions can move a result (kernels, estimators, schedulers)
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "ray", "optuna",
            "torchmetrics", "pytorch-fid", "lpips", "pandas")
DIFF_LIMIT = 1 << 20  # characters of `git diff` kept; a larger one is cut, and says so


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def environment(root: Path) -> dict:
    """The record of this process (the driver): versions, Python, host, its GPUs (the trials'
    nodes may have others: each trial's result lines name its node), start time, diff."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"started": now(), "python": platform.python_version(),
            "platform": platform.platform(), "host": socket.gethostname(),
            "packages": packages, "torch_cuda": torch.version.cuda, "gpus": gpus(),
            "uncommitted": uncommitted(root)}


def gpus() -> list[str]:
    """The GPUs' names by nvidia-smi ([] where there is none): asking torch would create a
    CUDA context in the driver, which holds GPU memory that the trials need."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def own_checkout(root: Path) -> bool:
    """Whether `root` (the folder above engine/) is the top of a git checkout: an installed
    copy in a virtual environment inside a user's own repository is not, and that
    repository's commit and diff are not the engine's."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root,
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(top) and Path(top).resolve() == Path(root).resolve()


def uncommitted(root: Path) -> dict | None:
    """`git diff HEAD` and the untracked files' names where the tree is dirty, else None (also
    where root is no git checkout of its own, e.g. an installed copy)."""
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=30).stdout
    try:
        if not own_checkout(root) or not git("rev-parse", "HEAD").strip():
            return None
        diff = git("diff", "HEAD")
        untracked = git("ls-files", "--others", "--exclude-standard").splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not diff and not untracked:
        return None
    cut = len(diff) > DIFF_LIMIT
    return {"diff": diff[:DIFF_LIMIT] + (f"\n[cut: {len(diff)} characters in all]" if cut
                                         else ""),
            "untracked": untracked}
