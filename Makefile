# raynas: `make demo` runs the quick start, `make test` the test suite. Both create .venv if missing.
# `make test-cluster`: `ray up` / `ray submit` / `ray down` over sshd on two loopback nodes (root; a few minutes).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-cluster bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' 'mlflow==3.17.2' torch==2.14.1 torchvision==0.29.1
	touch $(STAMP)

demo: install
	$(BIN)/raynas search --space nb201 --method darts --dataset digits --epochs 6 --seed 0 --out runs/quick

test: install
	$(BIN)/python -m pytest -q -m "not slow" tests

test-slow: install
	$(BIN)/python -m pytest -q -m slow tests --durations=10

test-cluster: install
	VENV=$(abspath $(VENV)) timeout 1500 bash tests/cluster/e2e.sh

bench: install
	$(BIN)/pip install -q --no-deps xautodl==1.0.0
	$(BIN)/python benchmarks/supernet_step.py --space nb201
	$(BIN)/python benchmarks/tune_overhead.py

lint: install
	$(BIN)/ruff check raynas search_spaces trials tests benchmarks

clean:
	rm -rf runs .pytest_cache
