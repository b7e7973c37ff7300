"""TEST-ONLY placeholder (see specter/__init__.py)."""

from specter import _refuse


def ex2d(*args, **kwargs):
    """Raises: the tests never use specter."""
    _refuse("extract.ex2d")
