"""
The minion's configuration: pillar ``vmigrate`` read once, with its defaults, and how to
reach each hypervisor (libvirt URIs, transports, the memory stream) from it.

Only pillar counts: a grain or a key in the minion's config cannot change where a VM goes or
switch a safety check off. Plain Python, no Salt dunders: :func:`config` takes the pillar.
"""

import os
import re
import runpy
import urllib.parse

from salt.exceptions import SaltInvocationError

validate_, xmlguard_ = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_validate", "vmigrate_xmlguard")

TRANSPORTS = ("ssh", "tls", "tcp")


DEFAULTS = {
    "uri": "qemu:///system",
    "transport": "ssh",
    "ssh_user": "root",
    "ssh_keyfile": None,
    "hypervisors": {},
    "keepalive_interval": 5,
    "keepalive_count": 3,
    "timeout": 600,
    "abort_deadline": 30,
    "memory_reserve_mib": 256,
    "poll_interval": 0.5,
    "progress_events": True,
    "shutdown_timeout": 120,
    "options": {},
    "allow_xml_changes": None,
    "capacity": {},
}


# Switches that weaken a safety check: False unless pillar says otherwise, each named in results.
SAFETY_SWITCHES = ("allow_unsafe", "allow_insecure_transport", "allow_plain_migration_stream")


_ADDR_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]{0,252})")


_SSH_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


_KEYFILE_RE = re.compile(r"/[A-Za-z0-9._/-]{1,4095}")


def config(pillar):
    """The configuration from pillar ``vmigrate`` (``pillar``), over :data:`DEFAULTS`,
    validated: a bad value raises SaltInvocationError naming the key."""
    pillar = pillar or {}
    if not isinstance(pillar, dict):
        raise SaltInvocationError(f"pillar vmigrate must be a mapping, got {type(pillar).__name__}")
    conf = dict(DEFAULTS)
    conf.update(pillar)
    for key in SAFETY_SWITCHES:
        if not isinstance(conf.get(key, False), bool):
            raise SaltInvocationError(f"pillar vmigrate:{key} must be true or false")
        conf[key] = conf.get(key, False)
    for key in ("timeout", "abort_deadline", "shutdown_timeout"):
        conf[key] = validate_.seconds(conf[key], f"pillar vmigrate:{key}", allow_none=False)
    try:
        conf["allow_xml_changes"] = xmlguard_.allowed(conf["allow_xml_changes"])
    except ValueError as err:
        raise SaltInvocationError(str(err)) from err
    conf["capacity"] = _capacity(conf["capacity"])
    return conf


# What a hypervisor offers its guests unless pillar vmigrate:capacity says otherwise: vCPUs
# as this many times its CPUs (nova's initial_cpu_allocation_ratio is 4.0).
CPU_ALLOCATION_RATIO = 4.0


def _capacity(value):
    """Pillar ``vmigrate:capacity``, checked: ``memory_mib`` (memory for guests, an integer
    >= 1; default: the host's less ``memory_reserve_mib``) and ``cpu_allocation_ratio``
    (vCPUs per CPU, > 0)."""
    if not isinstance(value, dict):
        raise SaltInvocationError("pillar vmigrate:capacity: a mapping (memory_mib, "
                                  "cpu_allocation_ratio)")
    unknown = set(value) - {"memory_mib", "cpu_allocation_ratio"}
    if unknown:
        raise SaltInvocationError(f"pillar vmigrate:capacity: unknown key(s) "
                                  f"{', '.join(sorted(unknown))} (memory_mib, "
                                  "cpu_allocation_ratio)")
    memory = value.get("memory_mib")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int)
                               or memory < 1):
        raise SaltInvocationError(f"pillar vmigrate:capacity:memory_mib {memory!r}: MiB of "
                                  "memory for guests, an integer >= 1")
    ratio = value.get("cpu_allocation_ratio", CPU_ALLOCATION_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 64:
        raise SaltInvocationError(f"pillar vmigrate:capacity:cpu_allocation_ratio {ratio!r}: "
                                  "vCPUs per host CPU, > 0 and <= 64")
    return {"memory_mib": memory, "cpu_allocation_ratio": float(ratio)}


def capacity(conf, host_memory_mib, host_cpus):
    """What this hypervisor offers its guests, for the master's planner: ``memory_mib``,
    ``vcpus``, and the host's own ``host_memory_mib`` and ``cpus``."""
    cap = conf["capacity"]
    memory = cap["memory_mib"]
    if memory is None:
        memory = max(int(host_memory_mib) - int(conf["memory_reserve_mib"]), 0)
    return {"memory_mib": memory, "vcpus": round(host_cpus * cap["cpu_allocation_ratio"], 2),
            "host_memory_mib": int(host_memory_mib), "cpus": int(host_cpus),
            "cpu_allocation_ratio": cap["cpu_allocation_ratio"]}


def check_addr(value, where):
    """``value`` if it is a host name or an address (IPv6 in brackets), else refused."""
    if not isinstance(value, str) or not _ADDR_RE.fullmatch(value):
        raise SaltInvocationError(f"pillar {where} {value!r} is not a host name or address")
    return value


def dest_uris(conf, dest, mode="live"):
    """
    How to reach hypervisor ``dest``, from the configuration ``conf`` (:func:`config`).

    Returns a dict: ``uri`` (the libvirt connection the source libvirtd opens to the
    destination), ``migrate_uri`` (where QEMU sends the memory stream, None when it is
    tunnelled), ``transport`` and ``data_stream`` (``tls``, ``tunnelled`` or ``plain tcp``).

    :param dest: the destination's minion id, a key of pillar ``vmigrate:hypervisors``
    :param mode: ``live`` (default) or ``offline`` (no memory moves: no data stream)
    """
    validate_.minion_id(dest)
    hypervisors = conf["hypervisors"] or {}
    if dest not in hypervisors:
        raise SaltInvocationError(
            f"dest {dest!r} is not a hypervisor: add it to pillar vmigrate:hypervisors "
            f"(known: {', '.join(sorted(hypervisors)) or 'none'})"
        )
    entry = hypervisors[dest] or {}
    where = f"vmigrate:hypervisors:{dest}"
    address = check_addr(entry.get("address", dest), f"{where}:address")
    mig_address = check_addr(entry.get("migration_address", address),
                              f"{where}:migration_address")
    transport = entry.get("transport", conf["transport"])
    if transport not in TRANSPORTS:
        raise SaltInvocationError(
            f"pillar vmigrate:transport {transport!r}: must be one of {', '.join(TRANSPORTS)}"
        )
    if transport == "tcp" and not conf["allow_insecure_transport"]:
        raise SaltInvocationError(
            "transport tcp is unauthenticated and unencrypted: use ssh or tls, or set pillar "
            "vmigrate:allow_insecure_transport: true on an isolated network"
        )
    if transport == "ssh":
        user = entry.get("ssh_user", conf["ssh_user"])
        if not isinstance(user, str) or not _SSH_USER_RE.fullmatch(user):
            raise SaltInvocationError(
                f"pillar vmigrate ssh_user {user!r}: a user name (lowercase letters, digits, "
                "_ and -, at most 32)")
        uri = f"qemu+ssh://{urllib.parse.quote(user, safe='')}@{address}/system"
        keyfile = entry.get("ssh_keyfile", conf["ssh_keyfile"])
        if keyfile is not None:
            if (not isinstance(keyfile, str) or not _KEYFILE_RE.fullmatch(keyfile)
                    or "/../" in f"{keyfile}/" or "/./" in f"{keyfile}/"):
                raise SaltInvocationError(
                    f"pillar vmigrate ssh_keyfile {keyfile!r}: an absolute path of letters, "
                    "digits, '.', '_', '-' and '/' (no '..')")
            uri += "?" + urllib.parse.urlencode({"keyfile": keyfile}, safe="/")
    else:
        uri = f"qemu+{transport}://{address}/system"
    # The memory stream: QEMU's own TLS with tls; through the ssh-protected libvirt connection
    # with ssh; plain TCP only with its own switch (guest RAM holds keys).
    if mode != "live":
        migrate_uri, stream = None, None
    elif transport == "tls":
        migrate_uri, stream = f"tcp://{mig_address}", "tls"
    elif transport == "ssh":
        migrate_uri, stream = None, "tunnelled"
    elif conf["allow_plain_migration_stream"]:
        migrate_uri, stream = f"tcp://{mig_address}", "plain tcp"
    else:
        raise SaltInvocationError(
            "transport tcp sends the guest's memory unencrypted: use ssh or tls, or also set "
            "pillar vmigrate:allow_plain_migration_stream: true on an isolated network"
        )
    return {"uri": uri, "migrate_uri": migrate_uri, "transport": transport,
            "data_stream": stream}
