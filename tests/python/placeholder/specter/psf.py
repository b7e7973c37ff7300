"""TEST-ONLY placeholder (see specter/__init__.py)."""

from specter import _refuse


def load_psf(*args, **kwargs):
    """Raises: the tests never use specter."""
    _refuse("psf.load_psf")
