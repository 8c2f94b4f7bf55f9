"""Which device a pytest-xdist worker grades on when the machine has several GPUs."""

from __future__ import annotations

import re


def worker_device(worker_id: str | None, n_gpus: int) -> str | None:
    """``cuda:{i % n_gpus}`` for xdist worker ``gw{i}`` on a machine with several GPUs, else None.

    None means "the default device" (``cuda`` = ``cuda:0`` with one GPU, else the CPU): with one GPU
    or none there is nothing to spread, and the controller (no worker id) keeps the default.
    """
    if n_gpus < 2 or not worker_id:
        return None
    match = re.fullmatch(r"gw(\d+)", worker_id)
    if match is None:
        return None
    return f"cuda:{int(match.group(1)) % n_gpus}"
