"""Root conftest: keeps the checkout importable and the plugin loaded without an install."""

# When the package is installed, its pytest11 entry point loads the plugin; loading it here too
# would register it twice, so only add it for an uninstalled checkout.
try:
    from importlib.metadata import entry_points

    _installed = any(ep.value == "benchmark.plugin" for ep in entry_points(group="pytest11"))
except Exception:  # pragma: no cover
    _installed = False

pytest_plugins = [] if _installed else ["benchmark.plugin"]
