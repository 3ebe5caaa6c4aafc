"""
Input checks shared by the vmigrate execution module, runner and states.

Plain functions: no Salt dunders. Each raises ``SaltInvocationError`` naming the argument, the
value and what is accepted, so bad input is refused before a file or a domain is touched.
Callers import this as plain Python (``vmigrate_imports.py``).
"""

import math
import re

from salt.exceptions import SaltInvocationError

MODES = ("live", "offline", "cold", "save")
# A libvirt domain name as vmigrate accepts it: no whitespace, quotes, slashes or shell syntax.
_VM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+:@-]{0,254}")
# A Salt minion id as vmigrate accepts it.
_MINION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")


def vm_name(value, what="vm"):
    """A domain name: letters, digits and ``_ . + : @ -``, at most 255 characters."""
    if not isinstance(value, str) or not _VM_RE.fullmatch(value):
        raise SaltInvocationError(
            f"{what} {value!r} is not a valid domain name (letters, digits, _ . + : @ -)"
        )
    return value


_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def host_uuid(value, what="dest_host_uuid"):
    """A libvirt host UUID (lower-case hex, 8-4-4-4-12), or None."""
    if value is not None and (not isinstance(value, str) or not _UUID_RE.fullmatch(value)):
        raise SaltInvocationError(f"{what} {value!r}: a libvirt host UUID "
                                  "(8-4-4-4-12 lower-case hex), as vmigrate.domains reports it")
    return value


def minion_id(value, what="dest"):
    """A minion id: letters, digits and ``_ . -``, at most 253 characters."""
    if not isinstance(value, str) or not _MINION_RE.fullmatch(value):
        raise SaltInvocationError(f"{what} {value!r} is not a valid minion id")
    return value


def mode(value):
    """``live``, ``offline``, ``cold`` or ``save``."""
    if value not in MODES:
        raise SaltInvocationError(f"mode {value!r}: must be one of {', '.join(MODES)}")
    return value


def seconds(value, what, allow_none=True):
    """A positive, finite number of seconds (never a bool, NaN or infinity); None if allowed."""
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise SaltInvocationError(f"{what} {value!r}: a positive number of seconds")
    return float(value)


def mib_per_s(value, what="bandwidth"):
    """A positive whole number of MiB/s (never a bool); None means unlimited."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SaltInvocationError(f"{what} {value!r}: a positive integer, MiB/s")
    return value


def valid(check, value):
    """Whether ``check`` (one of the functions above) accepts ``value``: for a value that is
    only used when it is good (an event's tag, a host UUID a minion reported)."""
    try:
        check(value)
        return True
    except SaltInvocationError:
        return False
