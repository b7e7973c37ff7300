"""TEST-ONLY placeholder for desihub's specter (not on PyPI).

desispec's ``desispec.scripts.extract`` imports ``specter``, ``specter.psf.load_psf`` and
``specter.extract.ex2d`` at module level, although its default (gpu_specter) path, the one the
tests run, never calls them. This placeholder lets that import succeed; anything in it that is
called raises, so a test that reached specter would fail loudly instead of passing.
"""

__version__ = "placeholder"


def _refuse(name):
    raise RuntimeError(f"specter.{name} called: this is the tests' placeholder, not specter")


def __getattr__(name):
    _refuse(name)
