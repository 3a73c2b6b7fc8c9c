# `make demo` and `make test` do all set-up themselves: a virtual environment in .venv,
# the package with its extras, and Procgen (installed --no-deps, see setup.cfg).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BEAM_STAMP := $(VENV)/.beam
export PYTHONUNBUFFERED := 1
# Transparent huge pages for XLA's CPU buffers (genie/host_memory.py): about 1.3x faster
# training on CPU, tests and benchmarks included. Tunables already set are kept, and a hugetlb
# setting of the user's own stands.
HUGE_PAGES := glibc.malloc.hugetlb=1
export GLIBC_TUNABLES := $(if $(findstring glibc.malloc.hugetlb,$(GLIBC_TUNABLES)),$(GLIBC_TUNABLES),$(if $(GLIBC_TUNABLES),$(GLIBC_TUNABLES):)$(HUGE_PAGES))

.PHONY: setup demo test test-slow bench lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[coinrun,play,test]'
	$(PY) -m pip install --quiet --no-deps procgen-mirror==0.10.7 gym3==0.3.3
	touch $(STAMP)

# Apache Beam (the video-folder builder's cluster path) only for the tests: the demo never
# needs it and its set-up stays shorter.
$(BEAM_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[coinrun,play,test,beam]'
	touch $(BEAM_STAMP)

demo: $(STAMP)
	$(PY) -m genie demo

test: $(STAMP) $(BEAM_STAMP)
	bash tests/install_browser.sh $(PY)
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m benchmarks.loader
	$(PY) -m benchmarks.train
	$(PY) -m benchmarks.play

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
