# The index of tasks. `make test` and `make demo` install first when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
QCLI := $(VENV)/bin/qcli
# The CPU build of torch for machines without a GPU; on a CUDA box run `make install TORCH=torch`.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench smoke clean

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
	$(VENV)/bin/ruff check qcli tests benchmarks

demo: $(STAMP)
	$(QCLI) estimate --model demo --preset qlora --context 512 --gpu T4
	$(QCLI) load demo --preset qlora --prompt "The capital of France is"

bench: $(STAMP)
	$(PY) benchmarks/bench.py

smoke: $(STAMP)
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make smoke needs a CUDA GPU: none found')"
	$(PY) -m pytest -q -m gpu
	mkdir -p reports
	$(QCLI) verify demo --preset qlora --device cuda --junit reports/verify-qlora.xml

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
