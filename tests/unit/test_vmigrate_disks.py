"""What a domain's XML says about its disks: every kind of disk, backing chains, volumes and
pools."""
from tests.support.modload import load
from tests.support.storage_facts import XML

dk = load("_utils", "vmigrate_disks")


def test_domain_disks_reads_every_kind():
    disks = {d["target"]: d for d in dk.domain_disks(XML)}
    assert disks["vda"]["path"] == "/srv/vm/vdisk.qcow2" and disks["vda"]["cache"] == "none"
    assert disks["sda"]["readonly"] and disks["vdb"]["type"] == "network"
    assert disks["sdb"]["path"] is None


def test_backing_files_come_from_the_live_xml_and_volume_xml():
    live = """<domain><devices>
      <disk type='file'><source file='/l/top.qcow2' index='1'/>
        <backingStore type='file' index='2'><format type='qcow2'/>
          <source file='/s/base.qcow2'/><backingStore/></backingStore>
        <target dev='vda'/></disk>
      <disk type='file'><source file='/l/b.qcow2'/><backingStore/><target dev='vdb'/></disk>
    </devices></domain>"""
    base = {"path": "/s/base.qcow2", "format": "qcow2"}
    assert dk.backing_files(live) == {"vda": base, "vdb": None}
    # A network backing store is a backing store too.
    rbd = live.replace("<source file='/s/base.qcow2'/>",
                       "<source protocol='rbd' name='pool/base'/>")
    assert dk.backing_files(rbd)["vda"] == {"path": "rbd:pool/base", "format": "qcow2"}
    vol = ("<volume><target><path>/l/top.qcow2</path><format type='qcow2'/></target>"
           "<backingStore><path>/s/base.qcow2</path><format type='qcow2'/></backingStore>"
           "</volume>")
    assert dk.volume_facts(vol) == {"format": "qcow2", "backing": base}
    assert dk.volume_facts("<volume><target><path>/x</path></target></volume>") == {
        "format": None, "backing": None}
    # A path is in use on the destination as a disk or anywhere in a running guest's chain.
    assert dk.disk_files(live) == {"/l/top.qcow2", "/s/base.qcow2", "/l/b.qcow2"}
    volumes = live.replace("</devices>", "<disk type='volume'><source pool='p' volume='v'/>"
                                         "<target dev='vdc'/></disk></devices>")
    assert dk.disk_volumes(volumes) == [("p", "v")]
    assert dk.pool_target("<pool type='dir'><name>p</name><target><path>/l</path></target>"
                          "</pool>") == "/l"
