"""vmigrate_host: the libvirt-python requirement read from the installed libvirt."""
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.modload import load

HOST = load("_modules", "vmigrate_host")
ANSWER = {}  # what cmd.run_all answers in the current test


@pytest.fixture
def configure_loader_modules():
    """pytest-salt-factories' loader mocking gives the module its ``__salt__``."""
    return {HOST: {"__salt__": {"cmd.run_all": lambda *a, **k: dict(ANSWER)}}}


def _host(stdout, retcode=0):
    ANSWER.update(retcode=retcode, stdout=stdout, stderr="")
    return HOST


def test_the_requirement_matches_the_installed_libvirt():
    assert _host("libvirtd (libvirt) 11.3.0\n").libvirt_python_requirement() == \
        "libvirt-python==11.3.0"
    assert _host("").libvirt_python_requirement("10.0.0") == "libvirt-python==10.0.0"


def test_a_host_without_libvirt_or_a_bad_pin_is_refused_naming_the_fix():
    with pytest.raises(CommandExecutionError, match="libvirt-daemon-system"):
        _host("", retcode=127).libvirt_python_requirement()
    with pytest.raises(SaltInvocationError, match="X.Y.Z"):
        _host("").libvirt_python_requirement("11.3; rm -rf /")
