"""Shared test settings."""
import torch

# The suite's models are tiny: two OpenMP threads on 4x8 matrices spend more time waking
# each other than computing (the product test ran 1 s with one thread, up to 50 s with two).
torch.set_num_threads(1)
