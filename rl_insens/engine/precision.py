"""Full float32 on CUDA: the engine's exactness promise does not survive TF32.

PyTorch lets cuDNN run float32 convolutions in TF32 by default (10-bit mantissa, relative error
~1e-3), which would break the 1e-4 exactness of Insens and flip the sign of activities near
zero. The switches are process-wide, so engine calls from several threads (the viewer's) share
one switch-off: the first call in saves the caller's settings, the last call out restores them.
On a CPU TF32 does not exist and nothing is touched.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_lock = threading.Lock()
_users = 0
_saved: tuple[bool, bool] = (False, False)


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextmanager
def ieee_float32(device: torch.device | str | None = "cuda") -> Iterator[None]:
    """TF32 off for convolutions and matrix products while any engine call on CUDA runs.

    ``device``: where the call computes; on a CPU this does nothing.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = _tf32()
            _set_tf32(False, False)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _set_tf32(*_saved)
