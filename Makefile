# lumbarseg: one command per job. `make demo` segments the sample; `make test` runs the suite.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of PyTorch, pinned: an unpinned torch pulls the newest CUDA build (several GB).
TORCH_PIN ?= torch==2.13.0
STAMP := .make-installed

.PHONY: install test lint demo bench clean

$(STAMP): setup.py
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[torch,dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(PYTHON) -m ruff check lumbarseg tests benchmarks setup.py
	$(PYTHON) -m vermin --no-tips --violations -t=3.8- --backport dataclasses --eval-annotations lumbarseg setup.py

test: lint
	$(PYTHON) -m pytest tests

demo: install
	$(PYTHON) -m lumbarseg dataset from-slices datasets/sample/images datasets/sample/masks \
		--label-map spider-png -o build/demo/sample.yml --overwrite
	$(PYTHON) -m lumbarseg dataset check build/demo/sample.yml

bench: install
	$(PYTHON) benchmarks/run.py

clean:
	rm -rf build dist *.egg-info $(STAMP) .pytest_cache
