"""
What a hypervisor needs before vmigrate's own module can load: facts read without
libvirt-python (``vmigrate.hypervisor`` calls these to install it into Salt's Python).

CLI Example:

.. code-block:: bash

    salt hv1 vmigrate_host.libvirt_python_requirement
"""

import re

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "vmigrate_host"

_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")


def __virtual__():
    return __virtualname__


def libvirt_python_requirement(version=None):
    """
    The pip requirement for libvirt-python matching this host's libvirt: ``libvirt-python==X``
    where X is ``version`` when given, else the installed libvirt daemon's version
    (``libvirtd --version``; libvirt-python must not be newer than the library it builds
    against, and is kept equal).

    :param version: a version to pin instead (``11.3.0``), e.g. from pillar

    CLI Example:

    .. code-block:: bash

        salt hv1 vmigrate_host.libvirt_python_requirement
    """
    if version is not None:
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            raise SaltInvocationError(f"libvirt-python version {version!r}: X.Y.Z")
        return f"libvirt-python=={version}"
    out = __salt__["cmd.run_all"](["libvirtd", "--version"], python_shell=False,
                                  ignore_retcode=True)
    found = _VERSION_RE.search(out.get("stdout") or "")
    if out.get("retcode") != 0 or not found:
        raise CommandExecutionError(
            "cannot read the installed libvirt's version (libvirtd --version: "
            f"{(out.get('stderr') or out.get('stdout') or 'no output').strip()[:200]}): install "
            "libvirt-daemon-system first, or set pillar "
            "vmigrate:hypervisor_setup:libvirt_python_version")
    return f"libvirt-python=={found.group(0)}"
