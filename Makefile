# The two commands of the README: `make demo` and `make test`. Each one creates (or
# refreshes) the virtual environment .venv, installs securefl with what it needs, and
# runs. The native core is rebuilt incrementally in build/.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test bench venv clean

$(PY):
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "securefl needs Python >= 3.10 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

demo: $(PY)
	$(PIP) install --quiet .
	$(VENV)/bin/securefl demo

test: $(PY)
	$(PIP) install --quiet '.[test]'
	$(VENV)/bin/pytest

bench: $(PY)
	$(PIP) install --quiet '.[bench]'
	$(VENV)/bin/pytest benchmarks --benchmark-only --benchmark-columns=median,iqr,rounds

clean:
	rm -rf build $(VENV) .pytest_cache .benchmarks
