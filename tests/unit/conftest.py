"""Fixtures the unit tests share (their helpers live in tests/support)."""
import pytest

from tests.support.master import fake_master


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A fake master for the master's shared code (tests/support/master.py); a test file that
    defines its own ``env`` fixture keeps it."""
    return fake_master(monkeypatch, tmp_path)
