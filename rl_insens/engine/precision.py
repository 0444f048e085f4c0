"""Full float32 on CUDA: the engine's exactness promise does not survive TF32."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Turn TF32 off for convolutions and matrix products, and restore the settings after.

    PyTorch lets cuDNN run float32 convolutions in TF32 by default (10-bit mantissa, relative
    error ~1e-3), which would break the 1e-4 exactness of Insens and flip the sign of activities
    near zero. Usable as a decorator.
    """
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
