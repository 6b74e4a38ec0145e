# buildplane — the README's commands. `make demo` and `make test` do all their own set-up.
SHELL := /bin/bash
VENV := .venv
BP := $(VENV)/bin/buildplane
PY := $(VENV)/bin/python
LAB := ops/lab
TILT_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help provision install demo test test-unit lab-up lab-down tilt-up tilt-down tilt-ci staging-mode deploy-mode bench

help:
	@echo "make demo | test | lab-up | lab-down | tilt-up | tilt-down | tilt-ci | staging-mode | deploy-mode | bench"

provision:  ## the lab and the tests: Debian packages, builder binaries, helm, chromium, the package with test extras
	bash $(LAB)/provision.sh

# What the mode targets need on a workstation: the Python package in .venv, nothing installed as root.
install: $(VENV)/.bp-installed  ## venv + the buildplane package (with Playwright for the browser smoke)

$(VENV)/.bp-installed: pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e .
	@touch $@

demo: provision  ## the main job on the embedded default (local lab)
	bash $(LAB)/with-lab.sh bash ops/demo.sh

test: provision  ## every test: unit, tool boundary, real (lab), browser
	bash $(LAB)/with-lab.sh $(PY) -m pytest -ra $(PYTEST_ARGS)

test-unit: provision
	$(PY) -m pytest -ra -m "not real and not browser" $(PYTEST_ARGS)

lab-up: provision
	bash $(LAB)/up.sh

lab-down:
	bash $(LAB)/down.sh

bench: provision  ## bench/run.py, the edit loop on direct and 40 ms / 50 Mbit/s registries (bench/edit_loop.py), monorepo scale (bench/monorepo.py)
	bash $(LAB)/with-lab.sh sh -c '$(PY) bench/run.py && $(PY) bench/edit_loop.py && $(PY) bench/monorepo.py'

# Tilt runs through `buildplane tilt`, which records the process it becomes, so tilt-down and
# deploy-mode stop exactly that process (no Tilt installed: exit 4 with how to install it).
tilt-up: install
	$(BP) tilt up $(TILT_ARGS)

tilt-down: install
	$(BP) tilt down

tilt-ci: install
	$(BP) tilt ci $(TILT_ARGS)

staging-mode: install  ## e.g. make staging-mode TILT_ARGS="runtime --build-only"
	$(BP) up --mode staging $(TILT_ARGS)

deploy-mode: install  ## stop Tilt if it runs, hand the canonical apps back to Argo CD, wait Synced+Healthy
	$(BP) handback $(HANDBACK_ARGS)
