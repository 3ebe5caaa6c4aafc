"""vmigrate's verdict on option pairs beside libvirt's own, on real daemons: for a sample of
combinations libvirt 11.3 or QEMU 10.0 refuse, vmigrate refuses first (before anything moves),
and libvirt, asked directly with the same flags and parameters, refuses too; the guest stays."""
import pytest
from salt.exceptions import SaltInvocationError

import vmlab
from tests.support.modload import load

opt = load("_utils", "vmigrate_options")

# (options, the stream vmigrate would use): each is refused by vmigrate_options.check.
SAMPLE = [
    ({"auto_converge": True, "auto_converge_initial": 0}, "plain tcp"),
    ({"compressed": True, "compression_xbzrle_cache": 3}, "plain tcp"),
    ({"compressed": True, "compression_methods": ["zlib"]}, "plain tcp"),
    ({"compressed": True, "compression_methods": ["mt"]}, "plain tcp"),
    ({"compressed": True, "parallel_connections": 2}, "plain tcp"),
    ({"postcopy": True, "suspend": True}, "plain tcp"),
    ({"postcopy": True, "parallel_connections": 2}, "plain tcp"),
    ({"postcopy": True}, "tunnelled"),
]


def _ours(options, stream):
    try:
        opt.check(opt.merge(None, options), "live", stream=stream)
    except SaltInvocationError as err:
        return str(err)
    return None


def _libvirts(lab, options, stream):
    """libvirt's answer to the same migration, asked of host1's libvirtd directly (as virsh
    would: peer-to-peer, persistent, undefine source, live)."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    flags, params = opt.to_libvirt(libvirt, options, "live", stream)
    flags |= (libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_LIVE
              | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
    if stream == "tunnelled":
        flags |= libvirt.VIR_MIGRATE_TUNNELLED
    else:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{lab.addr('host2')}"
    conn = libvirt.open(lab.libvirt_uri("host1"))
    try:
        conn.lookupByName("vdisk").migrateToURI3(f"qemu+tcp://{lab.addr('host2')}/system",
                                                 params, flags)
    except libvirt.libvirtError as err:
        return err.get_error_message()
    finally:
        conn.close()
    return None


@pytest.mark.parametrize("options, stream", SAMPLE, ids=[str(o) for o, _ in SAMPLE])
def test_vmigrate_refuses_what_libvirt_refuses(vdisk_on_host1, lab, options, stream):
    ours = _ours(options, stream)
    theirs = _libvirts(lab, options, stream)
    print(f"{options} ({stream}):\n  vmigrate: {ours}\n  libvirt:  {theirs}")
    assert ours is not None, "vmigrate let it through"
    assert theirs is not None, f"libvirt migrated with {options}: vmigrate's rule is wrong"
    vmlab.wait_for("vdisk to stay on host1 alone",
                   lambda: lab.placement() == (["host1"], ["host1"]), 30, 0.5)
