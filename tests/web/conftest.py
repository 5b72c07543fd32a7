"""Web fixtures live in tests/conftest.py so worker and browser tests share them."""
