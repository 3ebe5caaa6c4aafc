"""The exports/mount validator and renderer (_utils/vmigrate_exports.py): rules, safe defaults,
the marked block in /etc/exports parsed strictly, and fuzzing for injection."""
import string

import pytest
from hypothesis import example, given, settings, strategies as st
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.modload import load

ex = load("_utils", "vmigrate_exports")


def _export(path="/srv/vmimages", host="192.0.2.0/24", **options):
    return {"path": path, "clients": [{"host": host, "options": options or {"rw": True}}]}


def test_safe_defaults_are_filled_in():
    out = ex.validate_exports([_export()])
    assert ex.render_lines(out["exports"]) == [
        "/srv/vmimages 192.0.2.0/24(rw,sync,root_squash,no_subtree_check,secure,mp)"]
    assert out["warnings"] == []


def test_typed_values_render_canonically():
    out = ex.validate_exports([_export(anonuid=64055, anongid=64055, sec=["krb5p", "krb5i"],
                                        fsid=1, ro=True)])
    assert ex.render_lines(out["exports"]) == [
        "/srv/vmimages 192.0.2.0/24(ro,sync,root_squash,no_subtree_check,secure,mp,anongid=64055,"
        "anonuid=64055,fsid=1,sec=krb5p:krb5i)"]


@pytest.mark.parametrize("host", ["192.0.2.7", "192.0.2.0/24", "2001:db8::/64", "hv1",
                                  "hv1.example.com", "@hypervisors"])
def test_client_host_kinds(host):
    assert ex.validate_exports([_export(host=host)])["exports"][0]["clients"][0]["host"]


@pytest.mark.parametrize("flag", ["no_root_squash", "insecure", "async"])
def test_unsafe_flags_need_the_switch_and_then_warn(flag):
    with pytest.raises(SaltInvocationError, match=rf"allow_unsafe: \[{flag}\]"):
        ex.validate_exports([_export(**{flag: True})])
    out = ex.validate_exports([_export(**{flag: True})], allow_unsafe=[flag])
    assert flag in out["exports"][0]["clients"][0]["options"]
    assert any(flag in w for w in out["warnings"])


def test_the_hand_recipe_line_needs_every_override():
    recipe = [{"path": "/home/images",
               "clients": [{"host": "*", "options": {"rw": True, "no_root_squash": True}}]}]
    for allow in ([], ["no_root_squash"], ["any_client"]):
        with pytest.raises(SaltInvocationError):
            ex.validate_exports(recipe, allow_unsafe=allow)
    out = ex.validate_exports(recipe, allow_unsafe=["no_root_squash", "any_client"])
    assert ex.render_lines(out["exports"]) == [
        "/home/images *(rw,sync,no_root_squash,no_subtree_check,secure,mp)"]
    assert len(out["warnings"]) == 2


@pytest.mark.parametrize("exports, words", [
    ([_export(path="srv/vm")], "must be absolute"),
    ([_export(path="/srv/../etc")], ". or .. components"),
    ([_export(path="/srv/vm/")], "normalised"),
    ([_export(path="/srv/my vm")], "may only contain"),
    ([_export(host="10.0.0.0/33")], "not an IP address"),
    ([_export(host="*.example.com")], "wildcards"),
    ([_export(rw=True, ro=True)], "contradict"),
    ([_export(rw=False)], "takes true"),
    ([_export(anonuid=-1)], "anonuid must be an integer"),
    ([_export(anonuid=True)], "anonuid must be an integer"),
    ([_export(sec="krb6")], "sec must be"),
    ([_export(fsid="x")], "fsid must be"),
    ([_export(bogus=True)], "unknown option 'bogus'"),
    ([_export(), _export()], "exported twice"),
    ([{"path": "/srv/vm", "clients": []}], "non-empty list"),
    ([{"path": "/srv/vm", "clients": [{"host": "h", "options": "rw"}]}], "must be a mapping"),
    ([{"path": "/srv/vm", "clients": [{"host": "h"}], "mode": "777x"}], "mode must be"),
    ("/srv/vm", "must be a list"),
])
def test_bad_entries_name_the_entry_and_the_rule(exports, words):
    with pytest.raises(SaltInvocationError) as err:
        ex.validate_exports(exports)
    assert words in str(err.value)
    assert "vmigrate:nfs:server:exports" in str(err.value)


def test_etc_exports_keeps_foreign_lines_and_replaces_only_our_block():
    out = ex.validate_exports([_export()])["exports"]
    current = "/data 10.9.9.9(ro)\n# a comment\n"
    first = ex.render_file(out, current, "/etc/exports")
    assert first.startswith(current) and ex.BEGIN_MARK in first
    again = ex.render_file(out, first, "/etc/exports")
    assert again == first
    other = ex.validate_exports([_export(path="/srv/other")])["exports"]
    changed = ex.render_file(other, first + "/tail 10.1.1.1(ro)\n", "/etc/exports")
    assert "/data 10.9.9.9(ro)" in changed and "/tail 10.1.1.1(ro)" in changed
    assert "/srv/vmimages" not in changed and "/srv/other" in changed


@pytest.mark.parametrize("lines, words", [
    ([ex.BEGIN_MARK, "/srv/vm h(rw)"], "1 BEGIN and 0 END"),
    (["/srv/vm h(rw)", ex.END_MARK], "0 BEGIN and 1 END"),
    ([ex.BEGIN_MARK, ex.BEGIN_MARK, ex.END_MARK], "2 BEGIN and 1 END"),
    ([ex.END_MARK, "/x h(rw)", ex.BEGIN_MARK], "END first"),
])
def test_a_damaged_marker_block_is_refused(lines, words):
    with pytest.raises(CommandExecutionError, match=words):
        ex.marker_block(lines, "/etc/exports")
    with pytest.raises(CommandExecutionError, match="nothing was changed"):
        ex.render_file([], "\n".join(lines), "/etc/exports")


def test_foreign_lines_around_a_sound_block_are_kept():
    current = "\n".join(["/a h(ro)", ex.BEGIN_MARK, "/old h(rw)", ex.END_MARK, "/b h(ro)"])
    exports = [{"path": "/new", "clients": [{"host": "h", "options": ["rw"]}]}]
    new = ex.render_file(exports, current, "/etc/exports").splitlines()
    assert new == ["/a h(ro)", ex.BEGIN_MARK, "/new h(rw)", ex.END_MARK, "/b h(ro)"]


def test_removing_our_block_keeps_every_other_line():
    current = "\n".join(["/a h(ro)", ex.BEGIN_MARK, "/old h(rw)", ex.END_MARK, "/b h(ro)"])
    assert ex.strip_block(current, "/etc/exports") == "/a h(ro)\n/b h(ro)\n"
    assert ex.strip_block("/a h(ro)\n", "/etc/exports") is False
    with pytest.raises(CommandExecutionError, match="1 BEGIN and 0 END"):
        ex.strip_block(ex.BEGIN_MARK + "\n/old h(rw)\n", "/etc/exports")


@pytest.mark.parametrize("path, ok", [("/etc/exports", True), ("/etc/exports.d/v.exports", True),
                                      ("/etc/exports.d/v.conf", False), ("/tmp/x.exports", False)])
def test_exports_file_location(path, ok):
    if ok:
        assert ex.check_exports_file(path) == path
    else:
        with pytest.raises(SaltInvocationError):
            ex.check_exports_file(path)


@pytest.mark.parametrize("options, rendered", [
    ({"rw": True, "mountpoint": "/srv"}, "secure,mp=/srv)"),
    ({"rw": True, "mp": True}, "secure,mp)"),
    # opting out (an export that is not a guest image store)
    ({"rw": True, "mountpoint": False}, "secure)"),
    ({"rw": True, "nocrossmnt": True, "security_label": True},
     "secure,nocrossmnt,security_label,mp)"),
])
def test_exports_are_served_only_from_their_mounted_filesystem(options, rendered):
    out = ex.validate_exports([_export(**options)])
    line = ex.render_lines(out["exports"])[0]
    assert line.endswith(rendered), line


@pytest.mark.parametrize("options, words", [
    ({"mountpoint": "relative"}, "absolute"),
    ({"mountpoint": True, "mp": True}, "one option"),
    ({"crossmnt": True, "nocrossmnt": True}, "contradict"),
    # nfs-utils 2.6.2 (Debian 12) stops at xprtsec= and drops that export and every later one
    ({"xprtsec": "tls"}, "needs nfs-utils 2.6.3"),
])
def test_export_option_rules(options, words):
    with pytest.raises(SaltInvocationError, match=words):
        ex.validate_exports([_export(rw=True, **options)])


def test_xprtsec_where_the_servers_exportfs_knows_it():
    out = ex.validate_exports([_export(rw=True, xprtsec=["tls", "mtls"])], known=("xprtsec",))
    assert ex.render_lines(out["exports"])[0].endswith("secure,mp,xprtsec=tls:mtls)")
    with pytest.raises(SaltInvocationError, match="xprtsec must be"):
        ex.validate_exports([_export(rw=True, xprtsec="tls13")], known=("xprtsec",))


def test_mount_defaults_hard_and_refuses_unsafe_options():
    args = ex.validate_mount({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["vers=4.2"]})
    assert args["opts"] == ["hard", "vers=4.2"] and args["persist"] is True
    for opt in ("nolock", "soft"):
        with pytest.raises(SaltInvocationError, match=opt):
            ex.validate_mount({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": [opt]})
        args = ex.validate_mount({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": [opt]},
                                  allow_unsafe=[opt])
        assert args["warnings"]


@pytest.mark.parametrize("opts, switch", [
    # the kernel applies options in order: softerr is a soft mount whatever came before
    (["softerr"], "soft"),
    # QEMU's image locks are POSIX locks: kept local, exactly like nolock
    (["local_lock=posix"], "nolock"),
    (["local_lock=all"], "nolock"),
])
def test_soft_and_local_lock_amount_to_the_switch_they_need(opts, switch):
    mount = {"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": opts}
    with pytest.raises(SaltInvocationError, match=rf"allow_unsafe: \[{switch}\]"):
        ex.validate_mount(mount)
    args = ex.validate_mount(mount, allow_unsafe=[switch])
    assert args["warnings"]
    assert ("hard" in args["opts"]) == (switch != "soft"), args  # never "hard,softerr"


@pytest.mark.parametrize("opts", [
    ["hard", "vers=4.2", "proto=tcp", "timeo=600", "retrans=2", "local_lock=none"],
    ["_netdev", "x-systemd.automount", "x-systemd.requires=network-online.target",
     "x-systemd.mount-timeout=30", "nofail"],
    ["local_lock=flock", "nfsvers=3"],
])
def test_standard_options_are_accepted(opts):
    args = ex.validate_mount({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": opts})
    assert args["warnings"] == [] and set(opts) <= set(args["opts"]), args
    assert args["opts"].count("hard") == 1


@pytest.mark.parametrize("mount, words", [
    ({"name": "/srv/vm", "device": "nfs1:srv"}, "server:/absolute/path"),
    # one setting given twice: the kernel takes the last, so "hard,softerr" would end soft
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["hard", "softerr"]},
     "one setting given twice"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["vers=3", "nfsvers=4.2"]},
     "one setting given twice"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["lock", "local_lock=all"]},
     "one setting given twice"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["vers=2"]}, "vers must be one of"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["proto=udp"]}, "proto must be"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["timeo=0"]}, "timeo must be"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["retrans=x"]}, "retrans must be"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["local_lock=some"]}, "local_lock"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["rw,nolock"]}, "plain options"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "fstype": "ext4"}, "fstype"),
    ({"name": "/srv/vm", "device": "/x", "fstype": "none", "opts": ["rw"]}, "bind"),
    ({"name": "relative", "device": "nfs1:/srv/vm"}, "absolute"),
    ({"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["hard", "hard"]}, "twice"),
])
def test_bad_mounts_are_refused(mount, words):
    with pytest.raises(SaltInvocationError, match=words):
        ex.validate_mount(mount)


# ---- fuzzing: hostile pillar values never become extra export lines --------------------------
HOSTILE = st.text(alphabet=st.sampled_from(
    list(string.printable) + ["\x00", "\x1b", "\u2028", "\u0085", "é", "路", "\ufeff", "\\"]),
    max_size=40)
# Almost valid: a valid value with something hostile after it (a trailing "\n" once slipped
# through a `$`-anchored regex) or before it.
SEEDS = ["/srv/vm", "10.0.0.0/8", "192.0.2.1", "hv1", "@ng", "vers=4.2", "nfs1:/srv/vm", "krb5",
         "64055", "root"]
NEAR = st.one_of(st.builds(lambda a, b: a + b, st.sampled_from(SEEDS), HOSTILE),
                 st.builds(lambda a, b: a + b, HOSTILE, st.sampled_from(SEEDS)))
HOSTILE = st.one_of(HOSTILE, NEAR)
VALUES = st.one_of(HOSTILE, st.integers(-5, 2**33), st.booleans(), st.none(),
                   st.lists(HOSTILE, max_size=3))


def _assert_well_formed(exports, text):
    lines = text.splitlines()
    assert lines[0] == ex.BEGIN_MARK and lines[-1] == ex.END_MARK
    body = lines[1:-1]
    assert len(body) == len(exports), "an entry produced more or fewer lines than one"
    for export, line in zip(exports, body):
        assert line.startswith(export["path"] + " ")
        assert "#" not in line and "\r" not in line and "\x00" not in line
        assert all(ch.isprintable() and ord(ch) < 128 for ch in line)
        # Each client is host(options) with no space inside the parentheses.
        clients = line.split(" ")[1:]
        assert len(clients) == len(export["clients"])
        for client in clients:
            assert client.count("(") == 1 and client.endswith(")")


@settings(max_examples=400, deadline=None)
@given(path=st.one_of(HOSTILE, st.just("/srv/vm")), host=st.one_of(HOSTILE, st.just("10.0.0.0/8")),
       key=st.one_of(st.sampled_from(sorted([*ex.FLAG_OPPOSITE, *ex.VALUE_OPTIONS])), HOSTILE),
       value=VALUES)
def test_fuzz_single_export(path, host, key, value):
    exports = [{"path": path, "clients": [{"host": host, "options": {key: value}}]}]
    try:
        out = ex.validate_exports(exports)
    except SaltInvocationError as err:
        assert "vmigrate:nfs:server:exports[0]" in str(err) or "allow_unsafe" in str(err)
        return
    _assert_well_formed(out["exports"], ex.render_file(out["exports"], None, "/x.exports"))


@settings(max_examples=600, deadline=None)
@given(field=st.sampled_from(["path", "host", "key", "value", "sec", "anonuid"]), bad=HOSTILE)
@example(field="path", bad="/srv/vm\n")
@example(field="path", bad="/srv/vm\n/etc *(rw,no_root_squash)")
@example(field="host", bad="10.0.0.0/8\n")
@example(field="host", bad="hv1\n")
@example(field="host", bad="@ng\n")
@example(field="sec", bad="krb5\n")
@example(field="anonuid", bad="64055\n")
def test_fuzz_one_hostile_field_in_a_valid_export(field, bad):
    """Everything valid but one field: the hostile value is rejected or renders harmlessly."""
    path, host, options = "/srv/vm", "10.0.0.0/8", {"rw": True}
    if field == "path":
        path = bad
    elif field == "host":
        host = bad
    elif field == "key":
        options = {bad: True}
    elif field == "value":
        options = {"rw": bad}
    else:
        options = {field: bad}
    exports = [{"path": path, "clients": [{"host": host, "options": options}]}]
    try:
        out = ex.validate_exports(exports)
    except SaltInvocationError as err:
        assert "vmigrate:nfs:server:exports[0]" in str(err)
        return
    _assert_well_formed(out["exports"], ex.render_file(out["exports"], None, "/x.exports"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "path": st.one_of(HOSTILE, st.from_regex(r"/[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,2}", fullmatch=True)),
    "clients": st.lists(st.fixed_dictionaries({
        "host": st.one_of(HOSTILE, st.sampled_from(["10.0.0.0/8", "hv1", "@ng", "*", "::1"])),
        "options": st.dictionaries(st.sampled_from(["rw", "ro", "sync", "anonuid", "sec", "fsid"]),
                                   VALUES, max_size=3)}), min_size=1, max_size=3)}),
    min_size=1, max_size=4))
def test_fuzz_many_exports_into_etc_exports(exports):
    current = "/data 10.9.9.9(ro)\n"
    try:
        out = ex.validate_exports(exports)
    except SaltInvocationError:
        return
    text = ex.render_file(out["exports"], current, "/etc/exports")
    assert text.startswith(current)
    _assert_well_formed(out["exports"], text[len(current):])


@settings(max_examples=600, deadline=None)
@given(field=st.sampled_from(["name", "device", "opt"]), bad=HOSTILE,
       fstype=st.sampled_from(["nfs", "nfs4"]))
@example(field="name", bad="/srv/vm\n", fstype="nfs")
@example(field="device", bad="nfs1:/srv/vm\n", fstype="nfs")
@example(field="opt", bad="vers=4.2\n", fstype="nfs")
def test_fuzz_one_hostile_field_in_a_valid_mount(field, bad, fstype):
    mount = {"name": "/srv/vm", "device": "nfs1:/srv/vm", "opts": ["vers=4.2"], "fstype": fstype}
    mount[{"opt": "opts"}.get(field, field)] = [bad] if field == "opt" else bad
    try:
        args = ex.validate_mount(mount)
    except SaltInvocationError as err:
        assert "vmigrate:nfs:client:mounts[0]" in str(err)
        return
    for value in (args["name"], args["device"], *args["opts"]):
        assert not any(ch.isspace() or ch in "#,\\\"'" or not ch.isprintable() for ch in value)


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(HOSTILE, st.just("/srv/vm")),
       device=st.one_of(HOSTILE, st.just("nfs1:/srv/vm")),
       opts=st.lists(st.one_of(HOSTILE, st.sampled_from(["hard", "vers=4.2", "bind"])), max_size=3),
       fstype=st.sampled_from(["nfs", "nfs4", "none", "ext4\n"]))
def test_fuzz_mounts_never_carry_fstab_separators(name, device, opts, fstype):
    try:
        args = ex.validate_mount({"name": name, "device": device, "opts": opts, "fstype": fstype})
    except SaltInvocationError:
        return
    for field in (args["name"], args["device"], *args["opts"]):
        assert not any(ch.isspace() or ch in "#,\\\"'" for ch in field), field
