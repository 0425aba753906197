"""`evaluate` metric modules, loadable offline with ``evaluate.load(path)`` (see :func:`metric_path`)."""

from pathlib import Path


def metric_path(name: str) -> str:
    """The folder of a shipped metric module, for ``evaluate.load``."""
    return str(Path(__file__).parent / name)
