"""A fake master side for the unit tests of the master's shared code (``vmigrate_decide``,
``vmigrate_move``, ``vmigrate_reconcile``, ``vmigrate_evacuate``, ``vmigrate_jobs``,
``vmigrate_intake``) and the runner over it: a LocalClient that publishes jobs and delivers
their return events -- or does not --, a clock that moves only when the master waits, and the
shared modules as the plugins load them (through ``vmigrate_imports``), patched in one place.
"""
from tests.support.modload import load

_imports = load("_utils", "vmigrate_imports")

RUNNING = {"uuid": "u", "state": "running", "reason": "booted", "persistent": True}
OPTS = {"vmigrate": {"hypervisors_target": ["host1", "host2"]}, "conf_file": "/x",
        "sock_dir": "/x"}


def host_uuid(host):
    return f"00000000-0000-4000-8000-{host[-1]:0>12}"


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def time(self):
        return 1.8e9 + self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeEvents:
    def __init__(self, client):
        self.client = client

    def get_event(self, wait, tag, full):
        self.client.clock.now += wait
        for i, (due, event) in enumerate(self.client.pending):
            if due <= self.client.clock.now and event["tag"].startswith(tag):
                del self.client.pending[i]
                return event
        return None


class FakeClient:
    """``hosts``: {minion: {vm: info}} answering vmigrate.domains; ``dead``: minions that
    never answer; ``errors``: minions that answer with an error; ``migrate``: (delay, retcode,
    return) of the source's vmigrate.migrate, or None for no return ever."""

    def __init__(self, clock, hosts, dead=(), errors=(), migrate=(0, 0, None), after=None,
                 reported=None):
        self.clock, self.hosts, self.dead, self.errors = clock, hosts, set(dead), set(errors)
        # What each host's vmigrate.domains reports of its pillar (options, shutdown_timeout).
        self.reported = reported or {}
        self.migrate, self.after = migrate, after
        self.pending, self.calls, self.opened, self.closed = [], [], 0, 0
        # Salt jobs still running on their minion (saltutil.find_job), libvirt's jobs per host.
        self.running, self.libvirt_jobs = set(), {}
        self.event = FakeEvents(self)

    def __enter__(self):
        self.opened += 1
        return self

    def __exit__(self, *exc):
        self.closed += 1

    def run_job(self, tgt, fun, arg, tgt_type, kwarg, listen, timeout):
        assert listen is True
        jid = f"j{len(self.calls)}"
        self.calls.append((fun, tgt, list(arg), dict(kwarg)))
        targets = list(tgt) if tgt_type == "list" else list(self.hosts) + sorted(self.dead)
        targets = [t for t in targets if t in self.hosts or t in self.dead]
        for host in targets:
            if host in self.dead:
                continue
            delay, retcode, value = 0, 0, None
            if fun == "vmigrate.domains":
                if host in self.errors:
                    retcode, value = 1, "ERROR: cannot connect to libvirt"
                else:
                    value = {"host": host, "timeout": 600, "domains": self.hosts[host],
                             "host_uuid": host_uuid(host), **self.reported.get(host, {})}
            elif fun == "vmigrate.migrate":
                if self.after is not None:
                    self.hosts.update(self.after)
                if self.migrate is None:
                    continue
                delay, retcode, value = self.migrate
            elif fun == "vmigrate.precheck":
                value = {"checks": [], "blockers": []}
            elif fun == "saltutil.find_job":
                value = {"jid": arg[0], "fun": "vmigrate.migrate"} \
                    if arg[0] in self.running else {}
            elif fun == "vmigrate.jobs":
                value = {"host": host, "jobs": self.libvirt_jobs.get(host, {})}
            elif fun == "vmigrate.repair":
                vm, action = arg
                info = self.hosts[host][vm]
                if kwarg.get("uuid") != info["uuid"]:  # as the minion's repair refuses
                    retcode, value = 1, f"ERROR: {vm} has UUID {info['uuid']}"
                    self.pending.append((self.clock.now, {
                        "tag": f"salt/job/{jid}/ret/{host}",
                        "data": {"id": host, "fun": fun, "return": value, "retcode": 1}}))
                    continue
                if action == "destroy" and not info["persistent"]:
                    del self.hosts[host][vm]
                else:
                    info.update({"destroy": {"state": "shutoff"}, "resume": {"state": "running"},
                                 "persist": {"persistent": True}}.get(action, {}))
                    if action == "undefine":
                        del self.hosts[host][vm]
                value = {"name": vm, "host": host, "action": action}
            self.pending.append((self.clock.now + delay, {
                "tag": f"salt/job/{jid}/ret/{host}",
                "data": {"id": host, "fun": fun, "return": value, "retcode": retcode}}))
        return {"jid": jid, "minions": targets}


class MovingClient(FakeClient):
    """vmigrate.migrate moves the domain from its host to the destination and succeeds;
    ``appear``: {host: {vm: info}} defined there (by hand, behind vmigrate's back) during the
    first move."""

    appear = {}

    def run_job(self, tgt, fun, arg, tgt_type, kwarg, listen, timeout):
        if fun != "vmigrate.migrate":
            return super().run_job(tgt, fun, arg, tgt_type, kwarg, listen, timeout)
        jid = f"j{len(self.calls)}"
        self.calls.append((fun, tgt, list(arg), dict(kwarg)))
        (host,), (vm, dest) = tgt, arg
        info = self.hosts[host].pop(vm)
        if kwarg["mode"] == "live" or info["state"] == "shutoff":
            self.hosts[dest][vm] = dict(info, reason="migrated")
        for where, domains in self.appear.items():
            self.hosts[where].update(domains)
        self.appear = {}
        self.pending.append((self.clock.now, {
            "tag": f"salt/job/{jid}/ret/{host}",
            "data": {"id": host, "fun": fun, "retcode": 0,
                     "return": {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}}}))
        return {"jid": jid, "minions": [host]}


def shared(name):
    """The shared module ``name`` (``vmigrate_move``...) as every plugin loads it: patch it
    here, and the runner, the states and the other shared files see the patch."""
    return _imports.load(name)


# The shared files the master's code reads the time from.
TIMED = ("vmigrate_bus", "vmigrate_move", "vmigrate_evacuate")


def fake_master(monkeypatch, tmp_path):
    """A master whose clock, bus and LocalClient are fakes, its locks in a fresh cachedir
    (``tmp_path``): ``make(**FakeClient arguments)`` installs a client and returns it;
    ``fired`` collects the events fired; ``clock`` is the time every shared file reads. The
    ``env`` fixture (tests/unit/conftest.py)."""
    monkeypatch.setitem(OPTS, "cachedir", str(tmp_path))
    clock = Clock()
    for name in TIMED:
        monkeypatch.setattr(shared(name), "time", clock)
    bus = shared("vmigrate_bus")
    fired = []
    monkeypatch.setattr(bus, "fire", lambda opts, tag, data: fired.append((tag, dict(data))))
    box = {}

    def make(**kw):
        box["client"] = FakeClient(clock, **kw)
        monkeypatch.setattr(bus, "local_client", lambda opts: box["client"])
        return box["client"]

    return {"fired": fired, "make": make, "clock": clock}


def published(client, fun):
    """The calls of ``fun`` the master published through ``client``."""
    return [c for c in client.calls if c[0] == fun]
