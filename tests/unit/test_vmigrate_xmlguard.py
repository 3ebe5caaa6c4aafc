"""Option xml / persistent_xml against the definition libvirt holds: one hostile XML per class
of host resource, each refused by class, and the harmless changes --xml exists for let through."""
import pytest

from tests.support.modload import load

guard = load("_utils", "vmigrate_xmlguard")

BASE = """<domain type='qemu'>
  <name>vdisk</name>
  <uuid>6f1e4b9a-0000-4000-8000-0000000000aa</uuid>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <metadata><app:x xmlns:app='http://example.org/app'>free-form</app:x></metadata>
  <os>
    <type arch='x86_64' machine='pc-i440fx-10.0'>hvm</type>
    <kernel>/srv/lab/vdisk.kernel</kernel>
    <initrd>/srv/lab/vdisk.initrd</initrd>
    <cmdline>console=ttyS0</cmdline>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/srv/lab/vdisk.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <target dev='vnet0'/>
    </interface>
    <serial type='file'>
      <source path='/srv/lab/vdisk.console.log' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><source path='/dev/pts/3'/><target type='virtio'/></console>
    <graphics type='vnc' port='-1' autoport='yes'><listen type='address' address='127.0.0.1'/></graphics>
    <memballoon model='none'/>
  </devices>
</domain>"""


def _edit(old, new):
    assert old in BASE, old
    return BASE.replace(old, new, 1)


QEMU_NS = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"

HOSTILE = {
    # another guest's image, or a host file as a disk
    "disk_sources": [
        _edit("/srv/lab/vdisk.qcow2", "/srv/lab/other.qcow2"),
        _edit("<source file='/srv/lab/vdisk.qcow2'/>", "<source file='/etc/shadow'/>"),
        _edit("<disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'",
              "<disk type='block' device='disk'>\n      <driver name='qemu' type='qcow2'")
        .replace("<source file='/srv/lab/vdisk.qcow2'/>", "<source dev='/dev/sda'/>"),
        # a raw driver over a qcow2 image lets the guest rewrite its header (backing file)
        _edit("type='qcow2' cache='none'", "type='raw' cache='none'"),
        # one more disk
        _edit("    <serial type='file'>", "    <disk type='file'><source file='/etc/shadow'/>"
              "<target dev='vdb'/></disk>\n    <serial type='file'>"),
    ],
    "host_devices": [
        _edit("<memballoon", "<hostdev mode='subsystem' type='pci'><source><address domain="
              "'0' bus='0' slot='3' function='0'/></source></hostdev><memballoon"),
        _edit("<memballoon", "<filesystem type='mount'><source dir='/'/><target dir='root'/>"
              "</filesystem><memballoon"),
        _edit("<memballoon", "<input type='evdev'><source dev='/dev/input/event0'/></input>"
              "<memballoon"),
    ],
    "qemu_namespace": [
        _edit("<domain type='qemu'>", f"<domain type='qemu' {QEMU_NS}>").replace(
            "</devices>", "</devices><qemu:commandline><qemu:arg value='-set'/>"
                          "<qemu:arg value='x'/></qemu:commandline>"),
    ],
    "security_labels": [
        _edit("</devices>", "</devices><seclabel type='none'/>"),
        _edit("<source file='/srv/lab/vdisk.qcow2'/>", "<source file='/srv/lab/vdisk.qcow2'>"
              "<seclabel model='dac' relabel='no'/></source>"),
    ],
    "emulator": [_edit("/usr/bin/qemu-system-x86_64", "/tmp/evil")],
    "host_files": [
        _edit("/srv/lab/vdisk.console.log", "/etc/shadow"),
        _edit("/srv/lab/vdisk.kernel", "/etc/shadow"),
        _edit("</os>", "<loader readonly='yes' type='pflash'>/tmp/fw.fd</loader></os>"),
        _edit("<memballoon", "<channel type='unix'><source mode='bind' path='/etc/cron.d/x'/>"
              "<target type='virtio' name='x'/></channel><memballoon"),
        _edit("<interface type='network'>\n      <source network='default'/>",
              "<interface type='ethernet'><script path='/tmp/own.sh'/>"),
        _edit("</os>", "</os><sysinfo type='fwcfg'><entry name='opt/x' file='/etc/shadow'/>"
                       "</sysinfo>"),
        _edit("<memballoon", "<rng model='virtio'><backend model='random'>/dev/mem</backend>"
                             "</rng><memballoon"),
    ],
}


@pytest.mark.parametrize("cls, xml", [(c, x) for c, xs in HOSTILE.items() for x in xs])
def test_each_hostile_xml_is_refused_by_its_class(cls, xml):
    found = guard.changes(BASE, xml)
    assert cls in found, found
    check = guard.check("xml", found, [])
    assert check["ok"] is False and check["name"] == "xml_changes:xml", check
    assert cls in check["detail"] and "vmigrate:allow_xml_changes: [" in check["fix"], check
    # Allowing the classes the edit touches lets it pass, named; allowing all others does not.
    allowed = guard.check("xml", found, list(found))
    assert allowed["ok"] is True and cls in allowed["detail"], allowed
    assert guard.check("xml", found, [c for c in guard.CLASSES if c != cls])["ok"] is False


@pytest.mark.parametrize("xml", [
    BASE,
    # what --xml is for: host-specific settings that open nothing new on the host
    _edit("network='default'", "network='migration-net'"),
    _edit("address='127.0.0.1'", "address='0.0.0.0'"),
    _edit("<cmdline>console=ttyS0</cmdline>", "<cmdline>console=ttyS0 quiet</cmdline>"),
    _edit("<boot dev='hd'/>", "<boot dev='network'/>"),
    _edit("free-form", "other data"),
    _edit("/dev/pts/3", "/dev/pts/7"),  # libvirt's own pty, output only
    # attribute order and whitespace are not changes
    _edit("<source path='/srv/lab/vdisk.console.log' append='on'/>",
          "<source append='on'  path='/srv/lab/vdisk.console.log' />"),
])
def test_harmless_changes_pass(xml):
    assert guard.changes(BASE, xml) == {}


def test_the_pillar_switch_names_known_classes_only():
    assert guard.allowed(None) == [] and guard.allowed(["disk_sources"]) == ["disk_sources"]
    for bad in ("disk_sources", ["everything"], [1]):
        with pytest.raises(ValueError, match="allow_xml_changes"):
            guard.allowed(bad)
