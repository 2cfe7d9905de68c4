# Fresh-machine entry points: `make demo` and `make test` set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# The pinned CPU wheel; set TORCH="torch" (or a CUDA wheel spec) to choose another build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo demo-quick test lint clean

$(BIN)/picojepa: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev,ray,onnx]'
	touch $@

setup: $(BIN)/picojepa

demo: setup
	$(BIN)/picojepa demo --out picojepa-demo

demo-quick: setup
	$(BIN)/picojepa demo --quick --out picojepa-demo-quick

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) picojepa-demo picojepa-demo-quick
