"""The saltext-vmigrate wheel built from this tree and installed apart from the repository,
for the tests of the extension install (functional and on the lab)."""
import subprocess
import sys

from tests.support.modload import REPO


def build_and_install(tmp_path):
    """Build the wheel from the repository into ``tmp_path/dist`` and install it (no
    dependencies: salt and libvirt-python are the test venv's) into ``tmp_path/site``.
    Returns (wheel path, site directory): a Python with ``site`` on PYTHONPATH has the
    extension and nothing else of vmigrate's."""
    dist, site = tmp_path / "dist", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(dist), str(REPO)], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("saltext_vmigrate-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--target", str(site), str(wheel)], capture_output=True,
                             text=True, check=False)
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, site
