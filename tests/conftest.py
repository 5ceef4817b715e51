"""Shared test settings."""
import os
from pathlib import Path

import torch

# Ray's workers at its default nice 15 starve behind any busy process (CI runs the suite on a
# loaded machine: a 16 s cluster test took 276 s). engine.run.ray_backend sets the same default for
# the Ray it starts; the test fixtures that start Ray themselves (ray.cluster_utils.Cluster)
# start it before they import the engine.
os.environ.setdefault("RAY_worker_niceness", "0")

# The evaluation's per-machine cache (the digits classifier, reference statistics) in the
# checkout, so tests neither read nor fill the user's ~/.cache; it is trained once per clone.
os.environ.setdefault("VAE_ABLATIONS_CACHE",
                      str(Path(__file__).resolve().parent.parent / ".cache-tests"))

# The suite's models are tiny: two OpenMP threads on 4x8 matrices spend more time waking
# each other than computing (the product test ran 1 s with one thread, up to 50 s with two).
torch.set_num_threads(1)
