"""Shared pytest setup for every test layer."""
import logging
import os

# Salt flushes its queued log records at interpreter exit, after pytest closed the streams;
# don't print a traceback for each of those lines.
logging.raiseExceptions = False


def pytest_ignore_collect(collection_path, config):  # pylint: disable=unused-argument
    """tests/integration/fleet needs a lab of four hypervisors, the rest the default two:
    lab/test.sh runs each in a session of its own (VMLAB_HOSTS=4 for the fleet)."""
    fleet = collection_path.name == "fleet" and collection_path.parent.name == "integration"
    four = os.environ.get("VMLAB_HOSTS", "2") == "4"
    if fleet and not four:
        return True
    if four and collection_path.parent.name == "integration" and collection_path.is_file() \
            and collection_path.name.startswith("test_"):
        return True  # the two-host integration tests run in the other session
    return None
