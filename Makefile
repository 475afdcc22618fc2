# Everything a fresh machine needs: `make run` trains XOR on the simulated bench,
# `make test` runs the suite, `make bench` prints the speed and memory figures, `make studies`
# the bench-readiness studies.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup ngspice run test bench studies lint clean

setup: ngspice $(STAMP)

# Debian's ngspice 39 (the shared library PySpice loads, and the ngspice program).
ngspice:
	@if ldconfig -p | grep -q 'libngspice.so ' && command -v ngspice >/dev/null; then \
	  echo "ngspice: present"; \
	else \
	  echo "ngspice: installing Debian packages ngspice libngspice0 libngspice0-dev"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ngspice libngspice0 libngspice0-dev; \
	fi

# Exact versions from .ci/constraints.txt; pyproject.toml keeps the supported ranges.
$(STAMP): pyproject.toml .ci/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip -c .ci/constraints.txt
	$(PY) -m pip install -q -e '.[test]' -c .ci/constraints.txt
	touch $(STAMP)

run: setup
	$(VENV)/bin/hil train configs/xor.toml

test: setup
	$(VENV)/bin/ruff check hil drivers sim tests
	$(VENV)/bin/mypy
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

bench: setup
	OMP_NUM_THREADS=1 $(PY) tests/perf/run.py

# The bench-readiness studies (about 1.5 h on 2 cores): training under SMU noise, the shipped bench
# circuit with pot steps and tolerance, twin-trained weights in calibrated pots. Printed, never asserted.
studies: setup
	OMP_NUM_THREADS=1 $(PY) tests/perf/noise.py
	OMP_NUM_THREADS=1 $(PY) tests/perf/bench_noise.py
	OMP_NUM_THREADS=1 $(PY) tests/perf/transfer.py
	OMP_NUM_THREADS=1 $(PY) tests/perf/transfer.py --noise datasheet

lint: setup
	$(VENV)/bin/ruff check hil drivers sim tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
