#!/usr/bin/env bash
# make test: unit, functional and integration tests. The test session runs inside the test
# lab's control namespace, where the salt master and pytest-salt-factories' helpers live.
# With no arguments, two sessions: everything on the two-hypervisor lab, then the fleet tests
# (tests/integration/fleet) on a lab of four. Arguments go to one pytest session; one naming
# tests/integration/fleet gets the four-hypervisor lab.
set -uo pipefail
cd "$(dirname "$0")/.."
export VMLAB_NAME=${VMLAB_NAME:-vmtest} VMLAB_NET=${VMLAB_NET:-10.78.0}
py=.venv/bin/python

session() {  # session <hypervisors> [pytest args]
  local hosts=$1 rc
  shift
  VMLAB_HOSTS=$hosts $py lab/vmlab.py down >/dev/null
  VMLAB_HOSTS=$hosts $py lab/vmlab.py net-up || return 1
  # No path given: pytest.ini testpaths (tests/) applies.
  VMLAB_HOSTS=$hosts ip netns exec "$VMLAB_NAME-ctl" $py -m pytest -p no:cacheprovider "$@"
  rc=$?
  VMLAB_HOSTS=$hosts $py lab/vmlab.py down >/dev/null
  return $rc
}

if [ $# -eq 0 ]; then
  session 2
  rc=$?
  session 4 tests/integration/fleet
  rc2=$?
  [ $rc -eq 0 ] && rc=$rc2
  exit $rc
fi
hosts=2
for arg in "$@"; do
  case $arg in tests/integration/fleet*) hosts=4 ;; esac
done
session $hosts "$@"
