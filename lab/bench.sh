#!/usr/bin/env bash
# make bench: benchmarks printing ratios against baselines measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python bench/exports.py
.venv/bin/python bench/migrate.py
.venv/bin/python bench/locate.py
.venv/bin/python bench/forecast.py
.venv/bin/python bench/fleet.py
.venv/bin/python bench/planner.py
