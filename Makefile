# Set-up is two commands on a fresh machine: `make demo` and `make test`.
# Both create the environment (.venv, Python 3.12, locked by uv.lock) when it is missing.
# First Python 3.12 that actually runs (a pyenv shim may exist without 3.12 being active).
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v $$p || echo $$p; } && break; done)
VENV := .venv
UV := $(VENV)-uv/bin/uv
PY := $(VENV)/bin/python
# Headless MuJoCo rendering through Mesa: EGL and OSMesa both work once the libraries below are
# installed (measured costs in docs/vision.md); EGL also uses a GPU where there is one.
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: env sysdeps demo test test-fast bench clean

# Debian packages MuJoCo needs to render without a display (camera observations, videos).
SYSDEPS := libosmesa6 libegl1 libgl1-mesa-dri

$(UV):
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(VENV)-uv && $(VENV)-uv/bin/pip install -q uv

$(PY): $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --extra dev --python $(PYTHON312)
	@touch $(PY)

env: $(PY)

# Installs the rendering libraries when missing (dpkg -s makes the second run free). Without root
# or apt, it says what to install and carries on: everything but rendering still works.
sysdeps:
	@dpkg -s $(SYSDEPS) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	     apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSDEPS) >/dev/null; then \
	    echo "installed $(SYSDEPS) (headless rendering for MuJoCo)"; \
	  else \
	    echo "WARNING: could not install $(SYSDEPS); camera observations and videos need them:"; \
	    echo "  sudo apt-get install -y $(SYSDEPS)   (Debian/Ubuntu; then MUJOCO_GL=egl or osmesa)"; \
	  fi; }

demo: env sysdeps
	$(VENV)/bin/action-tokenizers run

test: env sysdeps
	$(PY) -m pytest -q -n 2 --timeout 900 tests

test-fast: env
	$(PY) -m pytest -q -m "not slow" tests

bench: env
	$(PY) benchmarks/tokenizers.py

clean:
	rm -rf $(VENV) $(VENV)-uv
