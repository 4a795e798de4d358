# Two entry points: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= data/demo
# A PyTorch wheel index, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu make install for the
# CPU-only torch (no CUDA libraries); empty: torch from PyPI (its CUDA build on Linux).
TORCH_INDEX ?=
PIP_TORCH := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# --no-compile: pip would byte-compile all ~9,600 modules it installs (PyTorch's CUDA build, its
# NVIDIA libraries, Rerun, ...), about 50 s of the install on 2 cores; Python compiles a module when
# it is first imported instead (as uv installs by default).
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --no-compile --progress-bar on $(PIP_TORCH) -c constraints.txt -e ".[all,test]"
	touch $@

install: $(VENV)/.installed

# the demo installs as its first step, so that its step lines and elapsed time include the install
demo:
	bash scripts/demo.sh $(DEMO_DIR)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/synthetic_fps.py
	$(BIN)/python benchmarks/storage.py
	$(BIN)/python benchmarks/write.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/live.py

clean:
	rm -rf $(VENV) data/demo runs/demo build *.egg-info
