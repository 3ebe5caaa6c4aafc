"""
The contract between a hypervisor minion and the master: how a request for a migration ended.

Every ``vmigrate.migrate`` (minion) and every master use case (``salt-run vmigrate.migrate``,
the ``vmigrate.migrated`` state, evacuate, the reactor) ends with one ``status`` from
:data:`STATUSES` and a short ``reason`` code. The master switches on these codes, never on the
words of a ``comment``: those are for a person.

- ``migrated``: it runs (or is defined) where it was asked to, verified on both hosts.
- ``unchanged``: it already was there; nothing was done.
- ``refused``: nothing was moved (bad input, a failed precheck, a lock held, ...).
- ``failed``: it ran and failed; the guest is where libvirt left it (read again and said).
- ``aborted``: stopped on request (``salt-run vmigrate.abort``, ``virsh domjobabort``).
- ``unknown``: the outcome could not be read; nothing may be repaired until a fresh reading
  says more (``salt-run vmigrate.locate``).

Plain Python, no Salt dunders: imported by the minion's module and the master's code alike.
"""

from salt.exceptions import CommandExecutionError

STATUSES = ("migrated", "unchanged", "refused", "failed", "aborted", "unknown")
# The codes a minion's vmigrate.migrate ends with when it does not move as asked.
FAILURES = ("refused", "failed", "aborted", "unknown")
# reason codes, by who sets them (the minion, or the master): what each means.
REASONS = {
    "invalid": "an argument or pillar value was refused before anything was touched",
    "error": "a lookup, connection or precheck failed before any job began",
    "precheck": "a precheck found the migration unsafe or impossible (its checks say why; "
                "the convergence forecast is one)",
    "libvirt": "libvirt failed the job (its error code is in the comment)",
    "timeout": "the job outlived its timeout and was aborted",
    "aborted": "stopped on request",
    "unsafe": "libvirt's own storage check refused it",
    "still_running": "the job still ran when the minion stopped waiting",
    "shutdown_timeout": "cold mode: the guest did not shut down in time",
    "no_shared_disk": "save mode: no file disk on shared storage to save beside",
    "lost_contact": "the link to the destination failed mid-way",
    "undefine": "it runs there but its definition stays here too",
    "busy": "another migration of this guest holds its lock",
    "slots": "the fleet's concurrent-migration slots are all taken",
    "maintenance": "the destination is in maintenance (salt-run vmigrate.maintenance)",
    "rules": "the placement rules forbid the destination (master config vmigrate:placement)",
    "no_destination": "no hypervisor takes it within capacity, rules and maintenance",
    "group": "not begun: another VM of its affinity group did not move",
    "owner": "it does not run on the requester's (or the evacuated) host",
}
# Words for a person, in comments; outcomes are decided on the codes above, never on these.
REFUSED = "nothing was moved"


class Outcome(CommandExecutionError):
    """A migration that did not end as asked: ``status`` one of :data:`FAILURES`, ``reason``
    a short code (:data:`REASONS`)."""

    def __init__(self, message, status="failed", reason=None):
        if status not in FAILURES:
            raise ValueError(f"outcome status {status!r}: one of {', '.join(FAILURES)}")
        super().__init__(message)
        self.status, self.reason = status, reason or status


def code_of(err):
    """(status, reason, words) of an exception that carries an outcome code (an
    :class:`Outcome`, of this copy of the module or of one an older sync left loaded), else
    None."""
    status = getattr(err, "status", None)
    if status in FAILURES:
        return status, getattr(err, "reason", None) or status, str(err)
    return None


def failure(value):
    """(status, words) of a source minion's ``vmigrate.migrate`` return that is not a success:
    its ``status`` code when it gives a known one; ``failed`` for anything else (an
    exception's text, a minion without vmigrate)."""
    if isinstance(value, dict) and value.get("status") in FAILURES:
        return value["status"], str(value.get("comment") or value["status"])
    return "failed", str(value)
