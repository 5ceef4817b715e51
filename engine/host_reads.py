"""Counting the reads of a device value into the host: each is a host-device sync on a GPU
(the host waits for every queued kernel), so a training step should have none.

The count is taken at the dispatcher, so it works on any device (on a CPU it counts the reads
that would be syncs on a GPU): `.item()`, `float()`, `bool()` and `int()` of a tensor
(aten._local_scalar_dense), and the ops whose output shape depends on values (nonzero, a boolean
mask, unique). `.tolist()` and `.cpu()` copy without the dispatcher's scalar read and are not
counted; the training loop reads its epoch's sums that way, once.
"""
from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode

READS = frozenset({"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "masked_select",
                   "unique", "_unique2", "unique_consecutive", "unique_dim"})


class HostReads(TorchDispatchMode):
    """`with HostReads() as reads: ...` then `reads.count`, `reads.ops` (name -> count)."""

    def __init__(self):
        super().__init__()
        self.ops: dict[str, int] = {}

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in READS:
            self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))
