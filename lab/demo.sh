#!/usr/bin/env bash
# make demo: a real live migration in the lab (see lab/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python lab/demo.py
