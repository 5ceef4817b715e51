"""Images as the models take them: (B, C, H, W) float in [0, 1].

Data sets are held as uint8 (a code k meaning k / 255: a quarter of float32's memory, one copy
per machine on the host and one per trial on the device) and converted a batch at a time, on
the device the batch is used on; a data set that is not 8-bit (area-averaged patches, images
with noise added) is held as float32 and taken as it is.
"""
from __future__ import annotations

import torch


def float_images(x: torch.Tensor, device=None, dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """(B, C, H, W) uint8 codes or floats -> `dtype` in [0, 1] on `device` (default: x's).

    uint8 travels to the device as uint8 (a quarter of the bytes) and is divided there in
    float32, k / 255 exactly as the data sets' float32 copies were (then cast to `dtype`). A
    float tensor already of `dtype` on `device` is returned as it is, not copied: callers read
    batches, they do not edit them."""
    if device is not None:
        x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return x.to(dtype)
