"""Web fixtures live in tests/conftest.py so worker and browser tests share them."""

from tests.conftest import unique  # noqa: F401  (kept for imports of tests.web.conftest.unique)
