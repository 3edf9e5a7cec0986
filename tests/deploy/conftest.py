"""The deploy/ tests share ``stack`` and ``namespace`` from tests/conftest.py."""
