"""Registry of attribution methods.

Adding a method is one new module with a decorated class::

    from benchmark.methods import register
    from benchmark.methods.base import AttributionMethod, Capabilities

    @register
    class MyMethod(AttributionMethod):
        \"\"\"One-line summary.

        Reference: Author et al., Title, Venue Year.
        \"\"\"
        name = "MyMethod"
        family = "gradient"
        capabilities = Capabilities(gradient=True)
        params = {"cheap": {}, "paper": {}}

        def attribute(self, model, inputs, target, params, **context): ...

:func:`discover` finds methods in every module of this package, in the entry-point group
``shortcut_bench.methods`` and in the modules or ``.py`` files listed (comma-separated) in the
environment variable ``SHORTCUT_BENCH_METHODS``. There is no hand-kept list of methods anywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path

from benchmark.errors import ConfigError, did_you_mean
from benchmark.methods import base
from benchmark.methods.base import (
    FAMILIES,
    LEVELS,
    AttributionError,
    AttributionMethod,
    Capabilities,
    explain,
    quantus_explain_func,
)

__all__ = [
    "AttributionError",
    "AttributionMethod",
    "Capabilities",
    "ENV_VAR",
    "ENTRY_POINT_GROUP",
    "all_methods",
    "discover",
    "explain",
    "get_method",
    "quantus_explain_func",
    "register",
    "unregister",
]

_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
ENV_VAR = "SHORTCUT_BENCH_METHODS"
ENTRY_POINT_GROUP = "shortcut_bench.methods"

_REGISTRY: dict[str, type[AttributionMethod]] = {}
_loaded_sources: set[str] = set()  # package modules, entry points and env entries already imported
_builtins_done = False


def register(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator adding an :class:`AttributionMethod` subclass to the registry.

    Raises ConfigError for a malformed class or a name that another class already uses.
    """
    if not (isinstance(cls, type) and issubclass(cls, AttributionMethod)):
        raise ConfigError(f"@register expects an AttributionMethod subclass, got {cls!r}.")
    where = f"{cls.__module__}.{cls.__qualname__}"
    if inspect.isabstract(cls):
        raise ConfigError(f"{where} does not implement attribute(); abstract classes cannot be registered.")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} must set a class attribute `name` (non-empty string).")
    if not _NAME_PATTERN.fullmatch(name):
        # Names end up in test ids, --bench-methods lists, report rows and file names of downstream tools.
        raise ConfigError(
            f"{where}: method name {name!r} is not allowed: use 1-64 characters, a letter or '_' first, then letters, "
            "digits, '_', '-' or '.' (no path separators, spaces, commas or control characters)."
        )
    if cls.family not in FAMILIES:
        raise ConfigError(
            f"{where}: family {cls.family!r} is not one of {FAMILIES}.{did_you_mean(cls.family, FAMILIES)}"
        )
    if not isinstance(cls.capabilities, Capabilities):
        raise ConfigError(f"{where}: `capabilities` must be a Capabilities instance.")
    missing = [lvl for lvl in LEVELS if not isinstance(cls.params.get(lvl), dict)]
    if missing:
        raise ConfigError(f"{where}: `params` needs a dict for each level {LEVELS}; missing {missing}.")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        same_definition = (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
        if not same_definition:  # a reloaded module may re-register its own class
            raise ConfigError(
                f"Duplicate attribution method name {name!r}: {where} and "
                f"{existing.__module__}.{existing.__qualname__}. Rename one of them."
            )
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method from the registry (for tests and throw-away methods)."""
    if name not in _REGISTRY:
        raise ConfigError(f"No registered method {name!r}.{did_you_mean(name, _REGISTRY)}")
    del _REGISTRY[name]


def _import_path(path: Path) -> None:
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    module_name = f"shortcut_bench_user_methods_{digest}_{resolved.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise


def _load(source: str, loader) -> None:
    if source in _loaded_sources:
        return
    _loaded_sources.add(source)
    try:
        loader()
    except ConfigError:
        _loaded_sources.discard(source)  # retry (and fail loudly again) on the next discover()
        raise
    except Exception as exc:
        _loaded_sources.discard(source)
        raise ConfigError(
            f"Could not load attribution methods from {source}: {type(exc).__name__}: {exc}"
        ) from exc


def discover() -> None:
    """Import built-in method modules, entry points and ``$SHORTCUT_BENCH_METHODS`` entries (idempotent)."""
    global _builtins_done
    if not _builtins_done:
        for info in pkgutil.iter_modules(__path__):
            _load(f"{__name__}.{info.name}", lambda n=info.name: importlib.import_module(f"{__name__}.{n}"))
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load(f"entry point {ep.name} = {ep.value}", ep.load)
        _builtins_done = True
    for entry in filter(None, (e.strip() for e in os.environ.get(ENV_VAR, "").split(","))):
        if entry.endswith(".py") or os.sep in entry:
            path = Path(entry).expanduser()
            if not path.is_file():
                raise ConfigError(f"{ENV_VAR} names {entry!r}, which is not a file.")
            _load(f"{ENV_VAR} file {path.resolve()}", lambda p=path: _import_path(p))
        else:
            _load(f"{ENV_VAR} module {entry}", lambda e=entry: importlib.import_module(e))


def all_methods() -> dict[str, type[AttributionMethod]]:
    """Every registered method, sorted by name (case-insensitive; runs :func:`discover` first)."""
    discover()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: kv[0].lower()))


def get_method(name: str) -> type[AttributionMethod]:
    """The method class registered as ``name`` (exact, else case-insensitive); ConfigError otherwise."""
    methods = all_methods()
    if name in methods:
        return methods[name]
    folded = {k.lower(): v for k, v in methods.items()}
    if isinstance(name, str) and name.lower() in folded:
        return folded[name.lower()]
    raise ConfigError(
        f"Unknown attribution method {name!r}.{did_you_mean(str(name), methods)} "
        f"Run `python -m benchmark.methods.listing` for the list."
    )


base.resolve_name = get_method  # explain("Saliency", ...) resolves names through the registry
