#!/usr/bin/env python3
"""Benchmark: validate, render and apply NFS exports for 1,000 clients.

Prints times and ratios against baselines measured in the same run:
  render: vmigrate_nfs validate+render  vs  a raw Jinja template (nfs-formula style, no checks)
  apply:  vmigrate_nfs.write_exports (atomic write + exportfs -ra, real exportfs)
          vs  writing the raw file and running exportfs -ra by hand
Runs in a private mount namespace with its own /etc and /var/lib/nfs: the machine's exports
are never touched.
"""
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "1000"))
EXPORTS = 10
ROUNDS = 5


def private_namespace():
    """Re-run this script in a mount namespace with private /etc and /var/lib/nfs."""
    if os.environ.get("VMIGRATE_BENCH_NS"):
        return
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="vmigrate-bench-"))
    subprocess.run(["cp", "-a", "/etc", tmp / "etc"], check=True)
    (tmp / "etc" / "exports.d").mkdir(exist_ok=True)
    (tmp / "nfs").mkdir()
    script = (f"mount --bind {tmp}/etc /etc && mount --bind {tmp}/nfs /var/lib/nfs && "
              f"exec {sys.executable} {' '.join(sys.argv)}")
    env = dict(os.environ, VMIGRATE_BENCH_NS="1", BENCH_ROOT=str(tmp))
    rc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                        env=env, check=False).returncode
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(rc)


def data(root):
    per = CLIENTS // EXPORTS
    exports = []
    for e in range(EXPORTS):
        path = root / f"export{e}"
        path.mkdir(exist_ok=True)
        clients = [{"host": f"10.{e}.{i // 250}.{i % 250 + 1}",
                    "options": {"rw": True, "anonuid": 64055, "anongid": 64055}}
                   for i in range(per)]
        exports.append({"path": str(path), "clients": clients})
    return exports


RAW_TEMPLATE = """{% for e in exports %}{{ e.path }}{% for c in e.clients %} {{ c.host }}(
{%- for k, v in c.options.items() %}{{ k if v is sameas true else k ~ '=' ~ v }}
{%- if not loop.last %},{% endif %}{% endfor %}){% endfor %}
{% endfor %}"""


def timed(fn, rounds=ROUNDS):
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main():
    private_namespace()
    sys.path.insert(0, str(REPO))
    import jinja2  # pylint: disable=import-outside-toplevel

    from tests.support.modload import load  # pylint: disable=import-outside-toplevel

    nfs = load("_modules", "vmigrate_nfs")

    def run_all(argv, python_shell=False):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return {"retcode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}

    nfs.__salt__ = {"cmd.run_all": run_all}
    exports = data(pathlib.Path(os.environ["BENCH_ROOT"]))
    ours_file = "/etc/exports.d/vmigrate.exports"
    raw_file = "/etc/exports.d/raw.exports"

    def ours_render():
        out = nfs.validate_exports(exports)
        return nfs.render_file(out["exports"], None, ours_file)

    template = jinja2.Template(RAW_TEMPLATE)

    def raw_render():
        return template.render(exports=exports)

    t_ours_render = timed(ours_render)
    t_raw_render = timed(raw_render)
    ours, raw = ours_render(), raw_render()
    lines = [l for l in ours.splitlines() if not l.startswith("#")]
    assert len(lines) == EXPORTS and sum(l.count("(") for l in lines) == CLIENTS

    toggle = {"n": 0}

    def ours_apply():
        # Alternate the content so every round really writes and re-exports.
        toggle["n"] += 1
        content = ours if toggle["n"] % 2 else ours.replace(nfs.END_MARK, "# round\n" + nfs.END_MARK)
        nfs._write_exports(ours_file, content)  # pylint: disable=protected-access

    def raw_apply():
        toggle["n"] += 1
        pathlib.Path(raw_file).write_text(raw + ("# round\n" if toggle["n"] % 2 else ""))
        proc = subprocess.run(["exportfs", "-ra"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr

    t_ours_apply = timed(ours_apply)
    os.unlink(ours_file)
    t_raw_apply = timed(raw_apply)
    os.unlink(raw_file)

    print(f"exports benchmark: {CLIENTS} clients in {EXPORTS} exports, median of {ROUNDS}")
    print(f"  render  vmigrate (validate+render) {t_ours_render * 1000:8.1f} ms   "
          f"raw jinja {t_raw_render * 1000:8.1f} ms   ratio {t_ours_render / t_raw_render:5.2f}x")
    print(f"  apply   vmigrate (write+exportfs)  {t_ours_apply * 1000:8.1f} ms   "
          f"raw write+exportfs {t_raw_apply * 1000:8.1f} ms   ratio "
          f"{t_ours_apply / t_raw_apply:5.2f}x")
    print(f"  total   vmigrate {(t_ours_render + t_ours_apply) * 1000:.1f} ms for {CLIENTS} clients")


if __name__ == "__main__":
    main()
