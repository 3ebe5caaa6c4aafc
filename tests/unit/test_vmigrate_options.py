"""Every virsh migrate option: the table is complete, each option is validated with a clear
error before anything is touched, and each reaches libvirt as the flag or parameter virsh
would set."""
import importlib.util
import re
import subprocess

import libvirt
import pytest
from salt.exceptions import SaltInvocationError

from tests.support.modload import REPO, load

opt = load("_utils", "vmigrate_options")


def _virsh_migrate_flags():
    out = subprocess.run(["virsh", "help", "migrate"], capture_output=True, text=True,
                         check=True).stdout
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", out, re.M))


def test_the_table_names_every_flag_of_this_virsh():
    flags = _virsh_migrate_flags()
    assert len(flags) > 40, flags
    named = set(re.findall(r"--[a-z0-9-]+", " ".join(row[0] for row in opt.TABLE)))
    # positional arguments of virsh migrate, not options
    assert flags - named - {"--domain", "--desturi"} == set()


def _docs_ext():
    """docs/_ext/vmigrate_docs.py, the Sphinx extension that renders the table into the docs."""
    path = REPO / "docs" / "_ext" / "vmigrate_docs.py"
    spec = importlib.util.spec_from_file_location("vmigrate_test_docs_ext", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rendered_tables(ext):
    """docs/options.md parsed as the docs build parses it (MyST), with the extension's
    directive: the generated tables it holds, each as its rows' texts."""
    from docutils import core as docutils_core  # pylint: disable=import-outside-toplevel
    from docutils.parsers.rst import directives  # pylint: disable=import-outside-toplevel
    from myst_parser.parsers.docutils_ import Parser  # pylint: disable=import-outside-toplevel

    directives.register_directive("vmigrate-options-table", ext.OptionsTable)
    page = (REPO / "docs" / "options.md").read_text()
    tree = docutils_core.publish_doctree(page, parser=Parser(), settings_overrides={
        "report_level": 5, "halt_level": 5, "myst_heading_anchors": 3})
    return [ext.table_rows(table) for table in tree.findall(ext.nodes.table)
            if "vmigrate-generated" in table["classes"]]


def test_the_docs_table_is_this_table(monkeypatch):
    """The docs' options table is rendered from TABLE when the docs are built (the
    vmigrate-options-table directive), never kept as a copy that could drift."""
    page = (REPO / "docs" / "options.md").read_text()
    assert "```{vmigrate-options-table}" in page
    assert "| `--live` |" not in page, "docs/options.md holds a copy of the table"
    ext = _docs_ext()
    assert _rendered_tables(ext) == [list(opt.TABLE)]
    # Taken from the code at build time: a changed TABLE is what the page shows.
    monkeypatch.setattr(ext.shared("vmigrate_options"), "TABLE", (("--x", "option x"),))
    assert _rendered_tables(ext) == [[("--x", "option x")]]


@pytest.mark.parametrize("given, words", [
    ({"auto_converge": "yes"}, "option auto_converge 'yes': true or false"),
    ({"autoconverge": True}, "unknown option 'autoconverge'"),
    ({"max_downtime": 0}, "option max_downtime 0: a whole number 1-600000 ms"),
    ({"max_downtime": True}, "option max_downtime True"),
    ({"timeout_action": "shrug"}, "option timeout_action 'shrug': one of abort, pause, postcopy"),
    ({"compression_methods": ["gzip"]}, "a list of xbzrle, mt, zlib, zstd"),
    ({"parallel_connections": 0}, "1-255"),
    ({"parallel_connections": 256}, "1-255"),
    # QEMU's ranges (migration/options.c), refused here first
    ({"auto_converge_initial": 0}, "1-99"),
    ({"auto_converge_initial": 100}, "1-99"),
    ({"auto_converge_increment": 100}, "1-99"),
    ({"compression_xbzrle_cache": 3}, "power of two"),
    ({"graphics_uri": "rdp://h"}, "spice://"),
    ({"graphics_uri": "spice://h?tlsPort=x"}, "spice://"),
    ({"migrate_uri": "tcp://h;rm -rf /"}, "tcp://<address>[:port]"),
    ({"xml": "<domain"}, "not well-formed XML"),
    ({"xml": "<network/>"}, "root element must be <domain>"),
    ({"graphics_uri": "spice://h\nx"}, "spice://"),
    ({"shutdown_timeout": float("nan")}, "seconds, > 0"),
    ({"copy_storage": "yes"}, "option copy_storage 'yes': one of all, inc"),
    ({"migrate_disks": "vda"}, "a list of disk targets"),
    ({"migrate_disks": ["vda", "vda"]}, "a list of disk targets"),
    ({"migrate_disks": ["../vda"]}, "a list of disk targets"),
    ({"migrate_disks_detect_zeroes": []}, "a list of disk targets"),
    ({"disks_port": 70000}, "option disks_port 70000: a whole number 1-65535"),
    ({"disks_uri": "nbd://h"}, "option disks_uri 'nbd://h': tcp://<address>[:port]"),
    ({"disks_uri": "unix:///run/x.sock"}, "tcp://<address>[:port]"),
])
def test_bad_values_are_refused_naming_the_option(given, words):
    with pytest.raises(SaltInvocationError, match=re.escape(words)):
        opt.merge(None, given)


def test_pillar_defaults_apply_only_to_the_modes_they_concern():
    defaults = {"timeout_action": "pause", "max_downtime": 300, "persistent_xml": "<domain/>"}
    # An evacuation's offline move must not be refused for the live policy in pillar.
    assert opt.merge(defaults, None, "offline") == {"persistent_xml": "<domain/>"}
    assert opt.check(opt.merge(defaults, None, "offline"), "offline")
    assert opt.merge(defaults, None, "live") == {"timeout_action": "pause", "max_downtime": 300,
                                                 "persistent_xml": "<domain/>"}
    # ... while a call's own option that does not fit the mode is still refused.
    with pytest.raises(SaltInvocationError, match="do not apply to mode=offline"):
        opt.check(opt.merge(defaults, {"max_downtime": 500}, "offline"), "offline")
    with pytest.raises(SaltInvocationError, match="pillar vmigrate:options: unknown option"):
        opt.merge({"bogus": 1}, None, "offline")


def test_pillar_defaults_are_checked_and_the_call_wins():
    assert opt.merge({"auto_converge": True, "max_downtime": 300}, {"max_downtime": 500}) == {
        "auto_converge": True, "max_downtime": 500}
    with pytest.raises(SaltInvocationError, match="pillar vmigrate:options: unknown option"):
        opt.merge({"bogus": 1}, None)
    with pytest.raises(SaltInvocationError, match="must be a mapping"):
        opt.merge(None, "auto_converge")


@pytest.mark.parametrize("given, mode, words", [
    ({"timeout_action": "postcopy"}, "live", "needs postcopy: true"),
    ({"postcopy_after_precopy": True}, "live", "needs postcopy"),
    ({"zerocopy": True}, "live", "needs parallel_connections"),
    ({"auto_converge_initial": 60}, "live", "needs auto_converge: true"),
    ({"compression_zlib_level": 5}, "live", "need compressed: true"),
    ({"compressed": True, "compression_zlib_level": 5}, "live", "needs zlib in compression_meth"),
    ({"downtime_steps": 3}, "live", "needs max_downtime"),
    ({"auto_converge": True}, "offline", "do not apply to mode=offline (only to mode live)"),
    ({"force_off": True}, "live", "only to mode cold"),
    ({"xml": "<domain/>"}, "save", "do not apply to mode=save"),
    ({"copy_storage": "all"}, "offline", "do not apply to mode=offline (only to mode live)"),
    ({"copy_storage": "all"}, "cold", "do not apply to mode=cold"),
    ({"migrate_disks": ["vda"]}, "live", "options migrate_disks need copy_storage: all or inc"),
    ({"copy_storage_synchronous_writes": True}, "live", "need copy_storage"),
    ({"copy_storage": "all", "disks_port": 49200, "disks_uri": "tcp://h"}, "live",
     "disks_port and disks_uri: one or the other"),
    ({"copy_storage": "all", "migrate_disks": ["vda"], "migrate_disks_detect_zeroes": ["vdb"]},
     "live", "migrate_disks_detect_zeroes names vdb, which migrate_disks does not"),
])
def test_rules_between_options_and_modes(given, mode, words):
    with pytest.raises(SaltInvocationError, match=re.escape(words)):
        opt.check(opt.merge(None, given), mode)


def test_xml_must_keep_the_name_and_uuid():
    xml = "<domain><name>other</name><uuid>u-1</uuid></domain>"
    with pytest.raises(SaltInvocationError, match="<name> must be 'vdisk' .a new name is "
                                                  "option dname"):
        opt.check(opt.merge(None, {"xml": xml}), "live", "vdisk", "u-1")
    # With option dname the XML may carry either name: libvirt gives it dname.
    assert opt.check(opt.merge(None, {"xml": xml, "dname": "other"}), "live", "vdisk", "u-1")
    with pytest.raises(SaltInvocationError, match="must be 'vdisk' or 'new'"):
        opt.check(opt.merge(None, {"xml": xml, "dname": "new"}), "live", "vdisk", "u-1")
    xml = "<domain><name>vdisk</name><uuid>u-2</uuid></domain>"
    with pytest.raises(SaltInvocationError, match="<uuid> must stay u-1"):
        opt.check(opt.merge(None, {"persistent_xml": xml}), "offline", "vdisk", "u-1")


def test_ssh_tunnel_takes_no_migrate_uri_and_tls_destination_needs_tls():
    with pytest.raises(SaltInvocationError, match="tunnels the memory stream"):
        opt.check({"parallel_connections": 4}, "live", stream="tunnelled")
    with pytest.raises(SaltInvocationError, match="needs transport tls"):
        opt.check({"tls_destination": "hv2"}, "live", stream="tunnelled")


def test_dname_is_per_migration_and_for_the_modes_that_move_a_definition():
    # A pillar default would give every guest the same name.
    with pytest.raises(SaltInvocationError, match="option dname is given per migration"):
        opt.merge({"dname": "x"}, None, "live")
    for mode in ("live", "offline", "cold"):
        assert opt.check(opt.merge(None, {"dname": "x"}), mode) == {"dname": "x"}
    with pytest.raises(SaltInvocationError, match="dname does not apply to mode=save: libvirt "
                                                  "restores a saved image only under the name"):
        opt.check(opt.merge(None, {"dname": "x"}), "save")
    with pytest.raises(SaltInvocationError, match="a one-line string"):
        opt.merge(None, {"dname": ""})
    for mode in ("live", "offline"):
        _flags, params = opt.to_libvirt(libvirt, {"dname": "x"}, mode, "tls")
        assert params == {libvirt.VIR_MIGRATE_PARAM_DEST_NAME: "x"}


def test_copy_storage_is_per_migration_and_not_through_an_ssh_tunnel():
    # A pillar default would try to copy every guest's disks, the shared ones too.
    with pytest.raises(SaltInvocationError, match="given per migration, not as a default"):
        opt.merge({"copy_storage": "all"}, None, "live")
    # libvirt refuses storage migration through a tunnelled stream: said before it is tried.
    with pytest.raises(SaltInvocationError, match="use transport tls"):
        opt.check({"copy_storage": "all"}, "live", stream="tunnelled")
    assert opt.check({"copy_storage": "all"}, "live", stream="tls")


def test_copy_storage_becomes_virsh_flags_and_parameters():
    given = opt.check(opt.merge(None, {
        "copy_storage": "all", "copy_storage_synchronous_writes": True,
        "migrate_disks": ["vda", "vdb"], "migrate_disks_detect_zeroes": ["vdb"],
        "disks_uri": "tcp://10.0.0.2:49300"}), "live", stream="plain tcp")
    flags, params = opt.to_libvirt(libvirt, given, "live", "plain tcp")
    assert flags == (libvirt.VIR_MIGRATE_NON_SHARED_DISK
                     | libvirt.VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES)
    assert params == {libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda", "vdb"],
                      libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS_DETECT_ZEROES: ["vdb"],
                      libvirt.VIR_MIGRATE_PARAM_DISKS_URI: "tcp://10.0.0.2:49300"}
    flags, params = opt.to_libvirt(libvirt, {"copy_storage": "inc", "disks_port": 49200},
                                   "live", "tls")
    assert flags == libvirt.VIR_MIGRATE_NON_SHARED_INC
    assert params == {libvirt.VIR_MIGRATE_PARAM_DISKS_PORT: 49200}


def test_options_become_the_flags_and_parameters_virsh_sets():
    # Only the mapping: check() refuses this set (mt, suspend with post-copy, ...), below.
    given = opt.merge(None, {
        "suspend": True, "auto_converge": True, "auto_converge_initial": 60,
        "auto_converge_increment": 20, "postcopy": True, "postcopy_bandwidth": 50,
        "compressed": True, "compression_methods": ["mt", "zstd"], "compression_mt_level": 3,
        "compression_zstd_level": 2, "parallel_connections": 4, "zerocopy": True,
        "change_protection": True, "listen_address": "10.0.0.2",
        "switchover_bandwidth": 100})
    flags, params = opt.to_libvirt(libvirt, given, "live", "plain tcp")
    for flag in ("PAUSED", "AUTO_CONVERGE", "POSTCOPY", "COMPRESSED", "PARALLEL", "ZEROCOPY",
                 "CHANGE_PROTECTION"):
        assert flags & getattr(libvirt, f"VIR_MIGRATE_{flag}"), flag
    assert not flags & libvirt.VIR_MIGRATE_UNSAFE
    assert params == {
        libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL: 60,
        libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT: 20,
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: 50,
        libvirt.VIR_MIGRATE_PARAM_COMPRESSION: ["mt", "zstd"],
        libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_LEVEL: 3,
        libvirt.VIR_MIGRATE_PARAM_COMPRESSION_ZSTD_LEVEL: 2,
        libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 4,
        libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "10.0.0.2",
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_AVAIL_SWITCHOVER: 100,
    }


def test_no_options_add_nothing():
    assert opt.to_libvirt(libvirt, {}, "live", "plain tcp") == (0, {})


def test_downtime_steps_rise_to_the_maximum():
    given = {"max_downtime": 500, "downtime_steps": 5, "downtime_step_delay": 2.0}
    assert [opt.downtime_at(given, t) for t in (0, 1.9, 2, 4, 8, 9, 100)] == [
        100, 100, 200, 300, 500, 500, 500]
    assert opt.downtime_at({"max_downtime": 300}, 0) == 300
    assert opt.downtime_at({}, 5) is None


# (options, stream, libvirt's or QEMU's words the refusal quotes) -- each read in libvirt 11.3's
# qemu_migration_params.c / qemu_migration.c and QEMU 10.0's migration/options.c.
PAIR_RULES = [
    ({"compressed": True, "compression_methods": ["mt"]}, "plain tcp",
     "not supported by QEMU binary"),
    ({"compressed": True, "parallel_connections": 4}, "plain tcp",
     "No compression algorithm selected for parallel migration"),
    ({"compressed": True, "compression_methods": ["xbzrle"], "parallel_connections": 4},
     "plain tcp", "isn't supported with parallel migration"),
    ({"compressed": True, "compression_methods": ["zlib", "zstd"], "parallel_connections": 4},
     "plain tcp", "Only one compression method"),
    ({"compressed": True, "compression_methods": ["zlib"]}, "plain tcp",
     "is only supported with parallel migration"),
    ({"postcopy": True, "suspend": True}, "plain tcp", "non-live or paused migration"),
    ({"postcopy": True}, "tunnelled", "not supported with tunnelled migration"),
    ({"postcopy": True, "parallel_connections": 2}, "plain tcp",
     "Postcopy is not yet compatible with multifd"),
    ({"zerocopy": True, "parallel_connections": 2}, "tls", "non-compressed non-TLS"),
    ({"zerocopy": True, "parallel_connections": 2, "compressed": True,
      "compression_methods": ["zstd"]}, "plain tcp", "non-compressed non-TLS"),
    ({"listen_address": "10.0.0.2"}, "tunnelled", "not supported by tunnelled migration"),
]


@pytest.mark.parametrize("given, stream, words", PAIR_RULES)
def test_each_pair_libvirt_or_qemu_refuses_is_refused_first_with_the_reason(given, stream, words):
    with pytest.raises(SaltInvocationError, match=re.escape(words)):
        opt.check(opt.merge(None, given), "live", stream=stream)


@pytest.mark.parametrize("given, stream", [
    ({"compressed": True}, "plain tcp"),  # xbzrle, libvirt's default, sent explicitly
    ({"compressed": True, "compression_methods": ["zstd"], "parallel_connections": 4,
      "compression_zstd_level": 3}, "plain tcp"),
    ({"parallel_connections": 1}, "tls"),
    ({"zerocopy": True, "parallel_connections": 2}, "plain tcp"),
    ({"postcopy": True, "postcopy_after_precopy": True}, "tls"),
    ({"graphics_uri": "spice://h2.example:5900?tlsPort=5901&tlsSubject=C=XX,O=x"}, "tls"),
])
def test_what_libvirt_and_qemu_accept_passes(given, stream):
    assert opt.check(opt.merge(None, given), "live", stream=stream)


def test_the_compression_method_list_is_always_sent():
    # libvirt tunes xbzrle's cache only when xbzrle is listed, and fills in its default later.
    flags, params = opt.to_libvirt(libvirt, {"compressed": True,
                                             "compression_xbzrle_cache": 64}, "live", "tls")
    assert params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] == ["xbzrle"]
    assert params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] == 64 << 20
