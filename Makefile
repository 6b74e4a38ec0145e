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

provision:  ## Debian packages, builder binaries, helm, chromium, the Python package
	bash $(LAB)/provision.sh

install: provision

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

bench: provision
	bash $(LAB)/with-lab.sh $(PY) bench/run.py

TILT := $(shell command -v tilt 2>/dev/null)
define need_tilt
	@if [ -z "$(TILT)" ]; then echo "tilt is not installed: see https://docs.tilt.dev/install.html (staging-mode and deploy-mode work without it)" >&2; exit 4; fi
endef

tilt-up: provision
	$(need_tilt)
	tilt up $(TILT_ARGS)

tilt-down:
	$(need_tilt)
	tilt down $(TILT_ARGS)

tilt-ci: provision
	$(need_tilt)
	tilt ci $(TILT_ARGS)

staging-mode: provision  ## e.g. make staging-mode TILT_ARGS="runtime --build-only"
	$(BP) up --mode staging $(TILT_ARGS)

deploy-mode: provision  ## stop Tilt if it runs, hand the canonical apps back to Argo CD, wait Synced+Healthy
	$(BP) handback $(HANDBACK_ARGS)
