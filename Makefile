# Set-up is two commands on a fresh machine: `make demo` and `make test`.
# Both create the environment (.venv, Python 3.12, locked by uv.lock) when it is missing.
# First Python 3.12 that actually runs (a pyenv shim may exist without 3.12 being active).
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v $$p || echo $$p; } && break; done)
VENV := .venv
UV := $(VENV)-uv/bin/uv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: env demo test test-fast bench clean

$(UV):
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(VENV)-uv && $(VENV)-uv/bin/pip install -q uv

$(PY): $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --extra dev --python $(PYTHON312)
	@touch $(PY)

env: $(PY)

demo: env
	$(VENV)/bin/action-tokenizers run

test: env
	$(PY) -m pytest -q -n 2 --timeout 900 tests

test-fast: env
	$(PY) -m pytest -q -m "not slow" tests

bench: env
	$(PY) benchmarks/tokenizers.py

clean:
	rm -rf $(VENV) $(VENV)-uv
