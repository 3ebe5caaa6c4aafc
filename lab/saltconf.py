"""Salt configuration for the lab: its pillar (production defaults, lab exceptions stated)
and the master/minion configs of the plain daemons that `make lab-up` and `make demo` start."""
import hashlib
import json
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parent.parent


def install_plugin(dest):
    """Install the plugin as a user does (make install-master) into ``dest``, the lab master's
    only file_roots directory: the master serves the plugin, never the repository."""
    subprocess.run(["make", "-s", "-C", str(REPO), "install-master", f"DEST={dest}"], check=True,
                   stdout=subprocess.DEVNULL)
    return str(dest)


def lab_pillar(lab):
    """Pillar for the lab. Production defaults stay safe; the lab states its exceptions."""
    hypervisors = {h: {"address": lab.addr(h)} for h in lab.hypervisors}
    return {
        "vmigrate": {
            "hypervisors": hypervisors,
            # The lab's hosts all sit on one machine, whose 24 GiB each would report: each
            # offers its guests 1 GiB instead, so the planner's choices mean something.
            "capacity": {"memory_mib": LAB_GUEST_MEMORY_MIB},
            # Lab only: libvirtd listens on unauthenticated TCP inside the lab namespaces.
            "transport": "tcp",
            "allow_insecure_transport": True,
            # Lab only: the memory stream crosses the lab's own bridge as plain TCP.
            "allow_plain_migration_stream": True,
            "nfs": {
                "server": {
                    # Lab only: no init system and no kernel nfsd; exportfs still validates.
                    "manage_service": False,
                    "exports": [{
                        "path": str(lab.export_dir),
                        "clients": [{"host": f"{lab.net}.0/24",
                                     "options": {"rw": True}}],
                    }],
                },
                "client": {
                    "mounts": [{
                        "name": str(lab.mountpoint),
                        # Lab only: this kernel has no NFS client; a bind mount of the
                        # NFS host's export directory stands in for the NFS mount.
                        "device": str(lab.export_dir),
                        "fstype": "none",
                        "opts": ["bind"],
                    }],
                },
            },
        }
    }


def request_key(lab, minion):
    """A requester's signing key. Lab only: derived from the lab's name so the master config
    and the minion's pillar agree without a secret store; real keys come from
    `openssl rand -hex 32`, kept in master config and in that minion's pillar only."""
    return hashlib.sha256(f"vmigrate-lab:{lab.name}:{minion}".encode()).hexdigest()


# Which requester may ask what (see _utils/vmigrate_authz.py). nfs1 is not a requester.
def request_policy(lab):
    own = {"vms": "own", "dests": list(lab.hypervisors), "kinds": ["migrate", "evacuate"]}
    requesters = {"master": {"key": request_key(lab, "master"), "vms": ["*"], "dests": ["*"],
                             "kinds": ["migrate", "evacuate"]}}
    requesters.update({h: dict(own, key=request_key(lab, h)) for h in lab.hypervisors})
    return {"max_age": 60, "requesters": requesters}


# The master's own grains are not read by the orchestration: cached (Salt's grains_cache,
# 300 s) instead of being gathered again by each of state.orch's two master minions, which
# took ~0.3 s of every `salt-run state.orch migrate` here (docs, "Tuning the master").
MASTER_TUNING = {"grains_cache": True}

REACTOR = [
    {"vmigrate/request": ["salt://vmigrate/reactor/migrate.sls"]},
    {"vmigrate/evacuate": ["salt://vmigrate/reactor/evacuate.sls"]},
    {"salt/beacon/*/vmigrate/*": ["salt://vmigrate/reactor/beacon.sls"]},
]


def minion_beacons(lab, host):
    """The vmigrate beacon on the hypervisors: libvirt's lifecycle events to the master."""
    return {"beacons": {"vmigrate": [{"uri": "qemu:///system"}]}} if host in lab.hypervisors \
        else {}


def minion_pillar(lab, minion):
    """The pillar only ``minion`` sees: its request key (nfs1 gets one the master does not
    know, as a minion outside the policy would)."""
    return {"vmigrate": {"request_key": request_key(lab, minion)}}


def write_pillar(pillar_dir, lab, pillar=None):
    """The lab master's pillar: ``pillar`` (default: the lab's) for every minion, and each
    minion's own request key for it alone."""
    pillar_dir = pathlib.Path(pillar_dir)
    pillar_dir.mkdir(parents=True, exist_ok=True)
    top = "base:\n  '*':\n    - vmigrate\n"
    for minion in (*lab.hypervisors, "nfs1"):
        top += f"  '{minion}':\n    - minion_{minion}\n"
        (pillar_dir / f"minion_{minion}.sls").write_text(
            json.dumps(minion_pillar(lab, minion), indent=2))
    (pillar_dir / "top.sls").write_text(top)
    (pillar_dir / "vmigrate.sls").write_text(json.dumps(pillar or lab_pillar(lab), indent=2))


def master_vmigrate(lab):
    """The master's vmigrate settings: the hypervisors are named, never guessed."""
    return {"hypervisors_target": list(lab.hypervisors), "hypervisors_target_type": "list",
            # A lab hypervisor lists its domains in well under a second.
            "query_timeout": 6,
            # Lab: returns travel over loopback; a lost one is reported sooner.
            "return_margin": 10,
            # Evacuation sends two at a time from one host.
            "max_outgoing": 2,
            "requests": request_policy(lab),
            "placement": LAB_PLACEMENT}


# What each lab hypervisor offers its guests (pillar vmigrate:capacity:memory_mib).
LAB_GUEST_MEMORY_MIB = 1024
# The lab's placement rules (master config vmigrate:placement), for guests of these names:
# the fleet tests add them (make lab-guest NAME=anti1 HOST=host1 shows the rules at work).
LAB_PLACEMENT = {
    "anti_affinity": {"pair": ["anti1", "anti2"]},
    "affinity": {"duo": ["aff1", "aff2"]},
    "allowed": {"pinned*": ["host1", "host2"]},
}


def master_config(lab, root_dir, pillar_dir, file_root):
    return {
        "id": f"{lab.name}-master",
        "root_dir": str(root_dir),
        "interface": lab.ctl_addr,
        "user": "root",
        "auto_accept": True,
        "file_roots": {"base": [str(file_root)]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "log_level_logfile": "info",
        "vmigrate": master_vmigrate(lab),
        "reactor": REACTOR,
        **MASTER_TUNING,
    }


def minion_config(lab, host, root_dir):
    return {
        **minion_beacons(lab, host),
        "id": host,
        "root_dir": str(root_dir),
        "master": lab.ctl_addr,
        "user": "root",
        "log_level_logfile": "info",
        "acceptance_wait_time": 1,
    }
