"""What machine and numeric libraries computed a run: recorded in run records and baselines, diffed in compare mode."""

from __future__ import annotations

import os
import platform
import re

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _onednn_version(config: str) -> str | None:
    # torch names it "oneDNN" or, in some builds, by its old name "MKL-DNN".
    m = re.search(r"(?:oneDNN|MKL-DNN)\)?\s*v?([0-9][0-9.]*)", config)
    return m.group(1) if m else None


def describe_machine() -> dict:
    """CPU model and cores, accelerator, torch, oneDNN and CUDA versions: the arithmetic a run was computed with."""
    try:
        config = torch.__config__.show()
    except Exception:  # noqa: BLE001 - informational only
        config = ""
    cuda = torch.cuda.is_available()
    try:
        isa = torch.backends.cpu.get_cpu_capability()  # the vector kernels ATen picked (e.g. AVX2, AVX512)
    except Exception:  # noqa: BLE001 - informational only
        isa = None
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": isa,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onednn": _onednn_version(config),
        "cuda": torch.version.cuda if cuda else None,
        "accelerator": torch.cuda.get_device_name(0) if cuda else None,
        "torch_threads": torch.get_num_threads(),
    }


def machine_differences(baseline: dict | None, current: dict | None) -> list[str]:
    """'cpu: A (baseline) vs B (this run)' for every field that differs; informational, never an error."""
    baseline, current = baseline or {}, current or {}
    keys = [k for k in ("cpu", "cpu_capability", "cpu_count", "platform", "accelerator", "torch", "onednn", "cuda",
                        "python")
            if k in baseline or k in current]
    return [f"{k}: {baseline.get(k)} (baseline) vs {current.get(k)} (this run)"
            for k in keys if baseline.get(k) != current.get(k)]
