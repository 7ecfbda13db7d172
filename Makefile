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
# The oldest datasets release the cards work with (pyproject: datasets>=5.1,<6). Its venv overlays .venv
# (a .pth adds .venv's site-packages after its own), so only datasets and what it pins differ.
DATASETS_OLDEST := 5.1.0
OLDEST := .venv-datasets-oldest
OLDEST_STAMP := $(OLDEST)/.installed-$(DATASETS_OLDEST)

.PHONY: demo test test-datasets-oldest bench install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e ".[test,cluster,lightning,hydra]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m m3leo_hf.demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q tests
	$(MAKE) test-datasets-oldest

$(OLDEST_STAMP): $(STAMP)
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip uninstall -q -y setuptools
	$(OLDEST)/bin/python -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/m3leo_base.pth", "w").write("import site; site.addsitedir(%r)\n" % sys.argv[1])' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(OLDEST)/bin/python -m pip install -q "datasets==$(DATASETS_OLDEST)"
	touch $@

# The tests marked `datasets` (cards, load_dataset, Hub round trip) on the oldest supported datasets.
test-datasets-oldest: $(OLDEST_STAMP)
	$(OLDEST)/bin/python -c 'import datasets; assert datasets.__version__ == "$(DATASETS_OLDEST)", datasets.__file__'
	$(OLDEST)/bin/python -m pytest -q -m datasets tests

$(BENCH_STAMP): pyproject.toml constraints.txt benchmarks/requirements.txt
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BENCH_PY) -m pip install -q -c constraints.txt -r benchmarks/requirements.txt
	$(BENCH_PY) -m pip install -q --no-deps -e .
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) -m benchmarks

clean:
	rm -rf $(DEMO_OUT) bench-out $(OLDEST)
