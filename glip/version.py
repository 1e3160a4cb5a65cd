"""The package version (one place; ``glip.__version__`` and the records glip writes read it)."""

__version__ = "0.1.0"
