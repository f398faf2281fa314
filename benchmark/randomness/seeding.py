"""Deterministic random streams: every random draw is a function of the run's seed and a key.

Keys such as ``("train", step)`` or ``("shuffle", epoch)`` give independent streams, so a run
resumed at step t draws exactly what an uninterrupted run draws at step t.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *key: object) -> int:
    """A 63-bit seed for the stream named by ``key`` within the run seeded by ``seed``."""
    text = ":".join(str(part) for part in (seed, *key))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def make_generator(device: torch.device | str, seed: int, *key: object) -> torch.Generator:
    """A generator on ``device`` seeded for the stream ``(seed, *key)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *key))
    return generator
