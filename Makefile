# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The benchmark's own environment: the peers (litdata, mosaicml-streaming) would pull another torch,
# so they are installed next to the project with torch held by constraints.txt.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,cluster]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m m3leo_hf.demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q tests

$(BENCH_STAMP): pyproject.toml constraints.txt
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BENCH_PY) -m pip install -q -c constraints.txt -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) -m benchmarks

clean:
	rm -rf $(DEMO_OUT) bench-out
