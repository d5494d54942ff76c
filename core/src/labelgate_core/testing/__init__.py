"""Contract test suites that every adapter of a port must pass, and the real servers the tests run against.

``bus_contract.BusContract`` and ``store_contract.StoreContract`` are abstract pytest classes: subclass one
and provide its factory fixture (their module docstrings show how). They import pytest, so import them from
their modules in tests only; this package itself imports nothing."""
