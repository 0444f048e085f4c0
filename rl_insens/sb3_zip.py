"""Reading a stable-baselines3 ``.zip`` without running code from it.

SB3 stores a model's classes and spaces as cloudpickles inside the archive's ``data`` JSON,
and loading them the usual way would run whatever a crafted file put there. Here only the
four entries needed to rebuild the policy are unpickled, by an unpickler that resolves
nothing but spaces, policies, layers, optimisers and numpy's own array and generator
constructors (the "restricting globals" recipe of the ``pickle`` documentation); the
weights are read with ``torch.load(weights_only=True)``, as SB3 itself does.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

NEEDED = ("policy_class", "observation_space", "action_space", "policy_kwargs")

NUMPY_CONSTRUCTORS = {
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pcg64", "PCG64"), ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._mt19937", "MT19937"), ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("copyreg", "_reconstructor"), ("builtins", "object"),
}
CLASS_MODULES = ("gymnasium.spaces.", "stable_baselines3.", "sb3_contrib.", "rl_insens.", "torch.nn.modules.",
                 "torch.optim.")
"""Modules whose classes the pickles may name; only classes of the kinds below are given."""


def _allowed_class(obj: Any) -> bool:
    import gymnasium as gym
    import torch
    from stable_baselines3.common.policies import BasePolicy

    return isinstance(obj, type) and issubclass(obj, (gym.spaces.Space, BasePolicy, torch.nn.Module,
                                                      torch.optim.Optimizer))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_CONSTRUCTORS:
            return super().find_class(module, name)
        if module.startswith(CLASS_MODULES) and "." not in name:
            obj = getattr(importlib.import_module(module), name, None)
            if _allowed_class(obj):
                return obj
        raise pickle.UnpicklingError(f"it asks to run {module}.{name}, which rl-insens does not load "
                                     "from a file")


def read_sb3_zip(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, params)``: the entries of :data:`NEEDED` and the state_dicts, or a ``ValueError``."""
    from stable_baselines3.common.save_util import load_from_zip_file

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            raw = json.loads(archive.read("data"))
        data = {key: _decode(raw[key]) for key in NEEDED if key in raw}
        _, params, _ = load_from_zip_file(path, load_data=False, device="cpu")
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, TypeError, RuntimeError, AttributeError,
            binascii.Error, pickle.UnpicklingError) as error:
        raise ValueError(f"{path} is not a readable stable-baselines3 agent: {error}") from None
    return data, params


def _decode(item: Any) -> Any:
    if isinstance(item, dict) and ":serialized:" in item:
        return _RestrictedUnpickler(io.BytesIO(base64.b64decode(item[":serialized:"]))).load()
    return item
