"""
Will a live migration converge? A forecast from the guest's dirty rate, measured by libvirt
before the job starts (``virDomainStartDirtyRateCalc``, then the ``dirtyrate`` statistics:
QEMU's page sampling, which works under TCG too), the link's bandwidth (the call's cap) and the
downtime allowed; and the convergence steps it picks (option ``policy: auto``, the default).

The model is pre-copy's: the first pass sends the guest's memory; each later pass sends what
was dirtied during the one before, until what is left fits in the allowed downtime. libvirt
measures the rate over at least one second, and a guest that rewrites a small working set
dirties all of it in much less: a pass is taken to dirty at least one second's worth, so the
forecast never expects the dirty set to shrink below the rate itself. When downtime alone
cannot do it, QEMU's auto-converge throttles the vCPUs (by up to 99 %): the throttle the
forecast needs is reported, and auto-converge chosen. Post-copy is chosen only where the
options opt in to it (``postcopy: true``); else a migration that cannot converge is refused,
with the numbers, before anything moves.

Plain Python; no Salt dunders, no libvirt import.
"""

# The default downtime (nova's live_migration_downtime: 500 ms, reached in 10 steps) that
# policy auto applies to a capped live migration that names no convergence option.
MAX_DOWNTIME_MS = 500
DOWNTIME_STEPS = 10
MAX_THROTTLE = 0.99
# Policy auto's throttle step (QEMU's cpu-throttle-increment; its default is 10).
AUTO_CONVERGE_INCREMENT = 20
# The options that choose convergence: giving one means the caller chose; auto stays out.
CONVERGENCE = ("max_downtime", "downtime_steps", "downtime_step_delay", "auto_converge",
               "auto_converge_initial", "auto_converge_increment", "postcopy_after_precopy",
               "timeout_action")
POLICIES = ("auto", "manual")
_PASSES = 60


def applies(options):
    """Whether policy auto picks the convergence steps: ``policy: auto`` given (the options
    given beside it are kept: ``max_downtime`` is then the target), or no policy and no
    convergence option named; never with ``policy: manual``."""
    policy = options.get("policy")
    if policy is not None:
        return policy == "auto"
    return not any(k in options for k in CONVERGENCE)


def forecast(memory_mib, dirty_mib_s, bandwidth_mib_s, max_downtime_ms=MAX_DOWNTIME_MS):
    """The forecast for a guest of ``memory_mib`` dirtying ``dirty_mib_s`` over a link of
    ``bandwidth_mib_s`` with ``max_downtime_ms`` allowed: ``converges`` (True, False, or None
    when the rate or the bandwidth is unknown), ``seconds`` and ``passes`` (pre-copy's, when
    it converges), ``downtime_ms`` (what the last pass would need), ``throttle`` (the
    auto-converge throttle it needs, 0..1, when it does not) and ``needs`` (None,
    ``auto_converge``, or ``postcopy`` when no throttle can do it), with the inputs."""
    out = {"memory_mib": memory_mib, "dirty_mib_s": dirty_mib_s,
           "bandwidth_mib_s": bandwidth_mib_s, "max_downtime_ms": max_downtime_ms,
           "converges": None, "needs": None}
    if dirty_mib_s is None or not bandwidth_mib_s:
        out["why"] = ("no bandwidth cap: the link's speed is not known before the job"
                      if not bandwidth_mib_s else "the dirty rate could not be measured")
        return out
    budget = bandwidth_mib_s * max_downtime_ms / 1000.0  # MiB the last pass may send
    left, seconds = float(memory_mib), 0.0
    for passes in range(1, _PASSES + 1):
        took = left / bandwidth_mib_s
        seconds += took
        left = min(float(memory_mib), dirty_mib_s * max(took, 1.0))
        if left <= budget:
            out.update(converges=True, passes=passes + 1,
                       seconds=round(seconds + left / bandwidth_mib_s, 1),
                       downtime_ms=round(left / bandwidth_mib_s * 1000))
            return out
    floor = min(float(memory_mib), dirty_mib_s)
    out.update(converges=False, downtime_ms=round(floor / bandwidth_mib_s * 1000))
    throttle = 1.0 - budget / dirty_mib_s
    out["throttle"] = round(throttle, 2)
    out["needs"] = "auto_converge" if throttle <= MAX_THROTTLE else "postcopy"
    return out


def steer(options, fc):
    """The options policy auto runs a migration under, from forecast ``fc``: the default
    downtime steps when the link is capped, auto-converge when downtime alone cannot do it (or
    when the rate could not be measured), post-copy after the first pass when only that can
    and the options opt in. Returns (options, None), or (options, why) when nothing can make
    it converge (refuse)."""
    out = dict(options)
    if not fc["bandwidth_mib_s"]:
        return out, None  # uncapped: the link's speed is unknown, nothing to steer by
    out.setdefault("max_downtime", MAX_DOWNTIME_MS)
    out.setdefault("downtime_steps", DOWNTIME_STEPS)
    if fc["converges"] is None:
        # Capped, the rate unmeasured: auto-converge on, and QEMU's own check (dirtying
        # faster than half of what a pass sends, twice) decides whether it throttles at all.
        out["auto_converge"] = True
    elif fc["needs"] == "auto_converge":
        out["auto_converge"] = True
        # From the throttle the forecast needs, not QEMU's 20 % + 10 %: those stalled here
        # (a pass kept dirtying its working set faster than the throttle rose).
        out["auto_converge_initial"] = min(99, max(20, -(-int(fc["throttle"] * 100) // 10) * 10
                                                   + 10))
        out["auto_converge_increment"] = AUTO_CONVERGE_INCREMENT
    elif fc["needs"] == "postcopy":
        if not options.get("postcopy"):
            return out, (
                f"forecast: it cannot converge: it dirties {fc['dirty_mib_s']} MiB/s, the "
                f"link is capped at {fc['bandwidth_mib_s']} MiB/s and {fc['max_downtime_ms']} "
                f"ms of downtime allow {fc['bandwidth_mib_s'] * fc['max_downtime_ms'] / 1000:g}"
                f" MiB: even a {MAX_THROTTLE:.0%} auto-converge throttle leaves too much. "
                "Raise the bandwidth cap, allow post-copy (options postcopy: true), or choose "
                "the steps yourself (options policy: manual)")
        out["auto_converge"] = True
        out["postcopy_after_precopy"] = True
    return out, None


def describe(fc):
    """One line for a person."""
    if fc["converges"] is None:
        return f"forecast: unknown ({fc['why']})"
    head = (f"forecast: {fc['memory_mib']} MiB dirtying {fc['dirty_mib_s']} MiB/s over "
            f"{fc['bandwidth_mib_s']} MiB/s, {fc['max_downtime_ms']} ms allowed: ")
    if fc["converges"]:
        return head + (f"converges in about {fc['seconds']:g} s ({fc['passes']} passes, last "
                       f"~{fc['downtime_ms']} ms)")
    return head + (f"does not converge by downtime alone (it would need ~{fc['downtime_ms']} "
                   f"ms); needs {fc['needs']} (throttle ~{fc['throttle']:.0%})")
