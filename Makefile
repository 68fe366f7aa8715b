# The index of tasks. `make test` and `make demo` install first when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
QCLI := $(VENV)/bin/qcli
# The pinned torch for machines without a GPU; on a CUDA box run `make install TORCH=torch` (or
# `make demo TORCH=torch`) on a fresh checkout, or after `make clean`: the venv is built once.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test lint demo readme bench smoke clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev,load]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check qcli tests benchmarks scripts

demo: $(STAMP)
	$(QCLI) estimate --model demo --preset qlora --context 512 --gpu T4
	$(QCLI) load demo --preset qlora --prompt "The capital of France is"

# Regenerates every example output in README.md (tests/test_readme.py checks them).
readme: $(STAMP)
	$(PY) scripts/readme_examples.py

bench: $(STAMP)
	$(PY) benchmarks/bench.py

smoke: $(STAMP)
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make smoke needs a CUDA GPU: none found')"
	$(PY) -m pytest -q -m gpu
	mkdir -p reports
	$(QCLI) verify demo --preset qlora --device cuda --junit reports/verify-qlora.xml

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
