"""The options ``pytest suites/`` (as ``--bench-NAME``) and ``python -m benchmark grade`` and ``build`` (as ``--NAME``)
share, each defined once so that their defaults and help cannot drift apart."""

from __future__ import annotations

from typing import Any

from benchmark.profiles import SEEDS_BY_PROFILE

PYTEST_PREFIX = "--bench-"
SWITCHES = ("auto", "on", "off")  # auto: on for the CPU, off on CUDA

# A help text names the other options as pytest spells them (--bench-X) and the run's folder as {root}; a command's copy
# says --X and "the current folder".
SHARED: dict[str, dict[str, Any]] = {
    "profile": {"default": None, "help": "quick | standard | paper (default: $SHORTCUT_BENCH_PROFILE, else quick on CPU, "
                                         "standard on GPU)"},
    "arch": {"default": None, "metavar": "vit",
             "help": "train and grade a small vision transformer (vit) instead of the profile's CNN, with the "
                     "transformer-specific methods; reports go to reports/vit/ (default: the profile's architecture)"},
    "seed": {"type": int, "default": 0, "help": "seed for data, training and grading (default 0)"},
    "data": {"default": "procedural", "help": "procedural | folder | kaggle | oxford-pet"},
    "data-root": {"default": None, "help": "folder with the real photos for --bench-data"},
    "cache-dir": {"default": None, "help": "where datasets/ and models/ live (default: $SHORTCUT_BENCH_CACHE, else {root})"},
    "reports-dir": {"default": None, "help": "where leaderboards are written (default: reports/ under {root})"},
    "device": {"default": None, "help": "torch device (default: cuda when present, else cpu)"},
    "methods": {"default": None, "help": "comma-separated method names to grade (default: all)"},
    "threshold": {"action": "append", "default": [], "metavar": "METRIC=VALUE",
                  "help": "override a metric's pass threshold (repeatable), e.g. AUC=0.8"},
    "cell-timeout": {"default": None, "metavar": "SECONDS",
                     "help": "per-cell time limit in seconds (default: the profile's; 0 = no limit)"},
    "mark": {"default": None, "metavar": "AREA[@OPACITY]",
             "help": "the watermark as a footprint area, optionally @opacity, e.g. 0.06 (default: the profile's, 3.9%% "
                     "of the image, opaque)"},
    "model-seeds": {"default": None, "metavar": "K",
                    "help": "train K seeds of every model; CIs then cover seeds and images (a t interval on the seeds' "
                            f"means) (default: {SEEDS_BY_PROFILE})"},
    "fresh": {"action": "store_true", "default": None,
              "help": "grade every cell and check again instead of reusing the result store under the cache directory "
                      "(what is graded is stored afresh); also $SHORTCUT_BENCH_FRESH=1"},
    "channels-last": {"default": "auto", "choices": SWITCHES,
                      "help": "explain channels-last copies of the models (auto: on for the CPU, off on CUDA); only "
                              "float rounding differs"},
    "fused-inference": {"default": "auto", "choices": SWITCHES,
                        "help": "forward the perturbation methods and metrics without gradients through frozen copies "
                                "of the models with BatchNorm folded and ReLU fused (auto: on for the CPU, off on "
                                "CUDA); only float rounding differs"},
}


def option_kwargs(name: str, *, pytest: bool, help: str | None = None) -> dict[str, Any]:
    """The keyword arguments that declare the shared option ``name`` to pytest (``pytest=True``) or to argparse."""
    kwargs = dict(SHARED[name])
    text = kwargs["help"] if help is None else help
    if pytest:
        kwargs["help"] = text.replace("{root}", "rootdir")
    else:
        kwargs["help"] = text.replace("{root}", "the current folder").replace(PYTEST_PREFIX, "--")
    return kwargs


def add_command_options(parser, names: tuple[str, ...], help: dict[str, str] | None = None) -> None:
    """Declare the shared options ``names`` on an argparse ``parser`` as ``--NAME`` (``help`` overrides texts)."""
    for name in names:
        parser.add_argument(f"--{name}", **option_kwargs(name, pytest=False, help=(help or {}).get(name)))
