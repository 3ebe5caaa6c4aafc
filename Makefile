# vmigrate: the two commands a newcomer needs are `make demo` and `make test`; `make docs`
# builds the documentation.
SHELL := /bin/bash
PY := .venv/bin/python
LAB := $(PY) lab/vmlab.py

.PHONY: install install-master wheel demo test test-unit docs lab-up lab-guest lab-down bench

install:            ## Debian packages, the venv, the guest kernel (idempotent)
	bash lab/install.sh

# What a Salt master serves for vmigrate, and nothing else: no .git, .venv, lab or tests.
PLUGIN_DIRS := _modules _states _runners _utils _beacons

install-master:     ## copy only the plugin into DEST, a directory listed in the master's file_roots
	@test -n "$(DEST)" || { echo "usage: make install-master DEST=/srv/salt/vmigrate" >&2; exit 2; }
	@for d in $(PLUGIN_DIRS); do \
	  mkdir -p "$(DEST)/$$d" && rm -f "$(DEST)/$$d"/vmigrate*.py && cp $$d/vmigrate*.py "$(DEST)/$$d/"; \
	done
	@rm -rf "$(DEST)/vmigrate" && cp -r salt/vmigrate salt/migrate.sls salt/evacuate.sls "$(DEST)/"
	@echo "vmigrate installed in $(DEST): list it in file_roots, then run salt-run saltutil.sync_all and salt '*' saltutil.sync_all"

wheel:              ## the saltext-vmigrate extension wheel in dist/ (salt-pip install it)
	$(PY) -m pip wheel --no-deps -q -w dist .

demo: install       ## a real live migration in the lab: vdisk host1 -> host2
	bash lab/demo.sh

test: install       ## unit + functional + integration tests (the lab comes up inside)
	bash lab/test.sh

test-unit:
	$(PY) -m pytest tests/unit tests/functional -q

docs:               ## the documentation site in docs/_build/html (warnings are errors)
	@$(PY) -c "import sphinx, myst_parser, furo" 2>/dev/null || { echo "make docs: sphinx," \
	  "myst-parser or furo missing: make install (or pip install -r requirements.txt)" >&2; exit 2; }
	$(PY) -m sphinx -W --keep-going -E -q -b html docs docs/_build/html

HOSTS ?= 2
lab-up: install     ## bring the lab up and leave it running, vdisk on host1 (HOSTS=4: host1..host4)
	VMLAB_HOSTS=$(HOSTS) $(LAB) up

lab-guest:          ## a small guest on a running lab: make lab-guest NAME=g1 HOST=host3
	@test -n "$(NAME)" -a -n "$(HOST)" || { echo "usage: make lab-guest NAME=g1 HOST=host3" >&2; exit 2; }
	VMLAB_HOSTS=$(HOSTS) $(LAB) guest $(NAME) $(HOST)

lab-down:           ## remove every namespace, process and mount the lab made
	$(LAB) down

bench: install
	bash lab/bench.sh
