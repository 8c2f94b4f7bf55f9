"""Seeding torch's generators as ``torch.manual_seed`` does, without its cost where no accelerator can use the seed."""

from __future__ import annotations

import functools

import torch


@functools.cache
def _accelerated() -> bool:
    # torch.manual_seed queues a lazy seed for each accelerator backend; only one this process can use ever applies it.
    backends = [getattr(torch, name, None) for name in ("cuda", "xpu", "mtia")] + [torch.backends.mps]
    available = []
    for backend in backends:
        try:
            available.append(bool(backend is not None and backend.is_available()))
        except Exception:  # a backend that cannot even say: treat it as there, and seed it as torch does
            available.append(True)
    return any(available)


def manual_seed(seed: int) -> None:
    """Seed torch as ``torch.manual_seed(seed)`` does; with no accelerator available, only the CPU generator, which is
    all it would seed there (the lazy accelerator seeds it queues, each with a stack trace, cost 1.2 ms a call)."""
    if _accelerated():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(int(seed))
