#!/usr/bin/env bash
# make test: unit, functional and integration tests. The test session runs inside the test
# lab's control namespace, where the salt master and pytest-salt-factories' helpers live.
set -uo pipefail
cd "$(dirname "$0")/.."
export VMLAB_NAME=${VMLAB_NAME:-vmtest} VMLAB_NET=${VMLAB_NET:-10.78.0}
py=.venv/bin/python
$py lab/vmlab.py down >/dev/null
$py lab/vmlab.py net-up || exit 1
# No path given: pytest.ini testpaths (tests/) applies.
ip netns exec "$VMLAB_NAME-ctl" $py -m pytest -p no:cacheprovider "$@"
rc=$?
$py lab/vmlab.py down >/dev/null
exit $rc
