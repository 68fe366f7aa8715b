# The index of tasks. `make test` and `make demo` install first when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
QCLI := $(VENV)/bin/qcli
# The pinned torch for machines without a GPU; on a CUDA box run `make install TORCH=torch` (or
# `make demo TORCH=torch`) on a fresh checkout, or after `make clean`: the venv is built once.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test lint demo readme bench sweep smoke gpu-truth clean

# .ci/constraints.txt: the library versions the tests and docs were checked against (users get pyproject's ranges).
$(STAMP): pyproject.toml .ci/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c .ci/constraints.txt -e '.[dev,load]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check qcli tests benchmarks sweep scripts

demo: $(STAMP)
	$(QCLI) estimate --model demo --preset qlora --context 512 --gpu T4
	$(QCLI) load demo --preset qlora --prompt "The capital of France is"

# Regenerates every example output in README.md and docs/planning.md (tests/test_readme.py checks them).
readme: $(STAMP)
	$(PY) scripts/readme_examples.py

bench: $(STAMP)
	$(PY) benchmarks/bench.py

# Every causal-LM type of the installed transformers against qcli: docs/sweep.md and sweep/truth.json
# (minutes; tests/test_sweep_sample.py runs a sample of it in `make test`).
sweep: $(STAMP)
	QCLI_NO_SPEC_CACHE=1 $(PY) -m sweep.run

# GPU targets stop with one line (make's own `*** ... Stop.`) before installing anything when torch sees no CUDA.
HAVE_CUDA = $(shell $(if $(wildcard $(PY)),$(PY),python3) -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null)
NEED_CUDA = $(if $(filter 1,$(HAVE_CUDA)),,$(error $@ needs a CUDA GPU: torch.cuda.is_available() is False here (or torch is missing)))

smoke:
	$(NEED_CUDA)
	@$(MAKE) --no-print-directory install
	$(PY) -m pytest -q -m gpu
	mkdir -p reports
	$(QCLI) verify demo --preset qlora --device cuda --junit reports/verify-qlora.xml

gpu-truth:
	$(NEED_CUDA)
	@$(MAKE) --no-print-directory install
	$(PY) benchmarks/gpu_truth.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
