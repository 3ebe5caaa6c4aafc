"""
libvirt's names, in one table: domain states and their reasons (``virDomainState``,
``virDomain*Reason``), job operations (``virDomainJobOperation``), and the groups of them
vmigrate decides on. Indexes are libvirt's enum values (include/libvirt/libvirt-domain.h).

Plain Python, no libvirt import: the master uses these names without libvirt-python.
"""

STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed",
          "pmsuspended")
REASONS = {
    "running": ("unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
                "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy",
                "postcopy_failed"),
    "paused": ("unknown", "user", "migration", "save", "dump", "ioerror", "watchdog",
               "from_snapshot", "shutting_down", "snapshot", "crashed", "starting_up",
               "postcopy", "postcopy_failed", "api_error"),
    "shutoff": ("unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
                "from_snapshot", "daemon"),
}
JOB_OPERATIONS = ("unknown", "start", "save", "restore", "migration_in", "migration_out",
                  "snapshot", "snapshot_revert", "dump", "backup", "snapshot_delete")

# States in which a domain holds a QEMU process on its host.
ACTIVE = ("running", "blocked", "paused")
# A source paused for one of these reasons is mid-migration: resuming it may start a second copy.
MIGRATION_PAUSE = ("migration", "postcopy", "postcopy_failed")
# A copy in (or left by) a post-copy migration: the guest's memory is split between the two
# hosts, the newest pages on the destination, the rest only on the source. Stopping either
# copy, or resuming the source, loses the guest; only resuming the migration saves it.
POSTCOPY = ("postcopy", "postcopy_failed")


def state(code):
    """The name of domain state ``code`` (its number when libvirt adds one)."""
    return STATES[code] if 0 <= code < len(STATES) else str(code)


def reason(state_name, code):
    """The name of reason ``code`` for state ``state_name``."""
    names = REASONS.get(state_name, ())
    return names[code] if 0 <= code < len(names) else str(code)


def operation(code):
    """The name of job operation ``code``."""
    return JOB_OPERATIONS[code] if 0 <= code < len(JOB_OPERATIONS) else str(code)
