"""Shared test settings."""
import os
from pathlib import Path

import torch

# The evaluation's per-machine cache (the digits classifier, reference statistics) in the
# checkout, so tests neither read nor fill the user's ~/.cache; it is trained once per clone.
os.environ.setdefault("VAE_ABLATIONS_CACHE",
                      str(Path(__file__).resolve().parent.parent / ".cache-tests"))

# The suite's models are tiny: two OpenMP threads on 4x8 matrices spend more time waking
# each other than computing (the product test ran 1 s with one thread, up to 50 s with two).
torch.set_num_threads(1)
