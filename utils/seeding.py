"""One master seed derives every random choice.

A child seed is a pure function of the master seed and a tuple of tags (``"split"``, the
repeat index, an attack name, ...), so adding a new consumer of randomness never shifts the
seeds that the existing consumers receive.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(master: int, *tags: object) -> int:
    """A 63-bit seed determined by ``master`` and ``tags`` (stable across runs and machines)."""
    text = repr((int(master),) + tuple(str(t) for t in tags)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & (2**63 - 1)


def numpy_rng(master: int, *tags: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(master, *tags))


def torch_generator(master: int, *tags: object) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(master, *tags))
    return gen


def content_key(*parts: object) -> str:
    """A short hex digest of ``parts``, used as a cache key for splits, profiles and models."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str(part.dtype).encode())
            digest.update(str(part.shape).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:20]
