"""shortcut-bench: grade image-attribution methods on models with a planted shortcut."""

__version__ = "0.1.0"
