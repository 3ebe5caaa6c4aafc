# vmigrate: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
LAB := $(PY) lab/vmlab.py

.PHONY: install demo test test-unit lab-up lab-down bench

install:            ## Debian packages, the venv, the guest kernel (idempotent)
	bash lab/install.sh

demo: install       ## a real live migration in the lab: vdisk host1 -> host2
	bash lab/demo.sh

test: install       ## unit + functional + integration tests (the lab comes up inside)
	bash lab/test.sh

test-unit:
	$(PY) -m pytest tests/unit tests/functional -q

lab-up: install     ## bring the lab up and leave it running, vdisk on host1
	$(LAB) up

lab-down:           ## remove every namespace, process and mount the lab made
	$(LAB) down

bench: install
	bash lab/bench.sh
