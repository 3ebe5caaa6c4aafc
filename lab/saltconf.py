"""Salt configuration for the lab: its pillar (production defaults, lab exceptions stated)
and the master/minion configs of the plain daemons that `make lab-up` and `make demo` start."""
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


def master_vmigrate(lab):
    """The master's vmigrate settings: the hypervisors are named, never guessed."""
    return {"hypervisors_target": list(lab.hypervisors), "hypervisors_target_type": "list",
            # A lab hypervisor lists its domains in well under a second.
            "query_timeout": 6,
            # Lab: returns travel over loopback; a lost one is reported sooner.
            "return_margin": 10}


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
    }


def minion_config(lab, host, root_dir):
    return {
        "id": host,
        "root_dir": str(root_dir),
        "master": lab.ctl_addr,
        "user": "root",
        "log_level_logfile": "info",
        "acceptance_wait_time": 1,
    }
