# lumbarseg: one command per job. `make demo` segments the sample; `make test` runs the suite.
# Python: PYTHON=... if given; else the active virtual environment's python (VIRTUAL_ENV set); else the
# project's own virtual environment .venv/, created on first use from SYSTEM_PYTHON (Debian/Ubuntu's own
# python3 refuses `pip install`, PEP 668).
SYSTEM_PYTHON ?= python3
VENV ?= .venv
ifeq ($(origin PYTHON),undefined)
  ifneq ($(VIRTUAL_ENV),)
    PYTHON := $(VIRTUAL_ENV)/bin/python
  else
    PYTHON := $(VENV)/bin/python
    MAKE_VENV := $(PYTHON)
  endif
endif
PIP := $(PYTHON) -m pip
# The CPU build of PyTorch, pinned: an unpinned torch pulls the newest CUDA build (several GB).
TORCH_PIN ?= torch==2.13.0
# One install stamp per interpreter, so switching PYTHON/venv installs into the new one.
STAMP := .make-installed-$(subst /,_,$(abspath $(PYTHON)))
# vermin has no __main__: `python -m vermin` fails, so call its entry point with this interpreter.
VERMIN := $(PYTHON) -c 'import sys, vermin; sys.exit(vermin.main())'

.PHONY: install test lint py38-check demo model bench docs docs-serve clean distclean test-py38 docker-cpu docker-cuda \
	docker-run-cpu docker-run-cuda

$(VENV)/bin/python:
	$(SYSTEM_PYTHON) -m venv $(VENV)

$(STAMP): setup.py $(MAKE_VENV)
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[torch,dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(PYTHON) -m ruff check lumbarseg tests benchmarks datasets docs setup.py
	$(VERMIN) --no-tips --violations -t=3.8- --backport dataclasses --eval-annotations lumbarseg setup.py

# The 3.8 import run comes before the suite so that pytest's closing line is the whole suite's.
test: lint py38-check
	$(PYTHON) -m pytest tests

py38-check:
	@if command -v $(PYTHON38) >/dev/null 2>&1; then $(MAKE) --no-print-directory test-py38; \
	else echo "no Python 3.8 found: vermin checked 3.8 compatibility; skipping the 3.8 import run"; fi

# The demo sample (patient 161 of SPIDER, a test patient of the shipped models).
SAMPLE := datasets/sample/spider161_t2
SPIDER ?= ../shared/data/spider-t2space-png

# `make demo` segments the sample with the default model (accurate).
demo: install
	$(PYTHON) -m lumbarseg predict -i $(SAMPLE).nii.gz -o build/demo/spider161_seg.nii.gz --overlay --measure --overwrite
	$(PYTHON) -m lumbarseg evaluate --pred build/demo/spider161_seg.nii.gz --gt $(SAMPLE)_labels.nii.gz \
		--label-map spider-png --pred-label-map lumbarseg --images $(SAMPLE).nii.gz -o build/demo/report --overwrite
	@echo "demo outputs: build/demo/ (mask, overlay PNG, volumes CSV/JSON, spine report and levels) and build/demo/report/"

# Reproduce a shipped model (MODEL=accurate|fast, default accurate) from the SPIDER PNG export: dataset,
# training with the model's recipe, export to its file in models/, test-split report in the run folder.
# accurate trains in three stages: its recipe; a second cosine cycle from that run's best model; then 2.5D
# (neighbouring slices as channels, dataset `context`) from the second stage's best model, inflated.
MODEL ?= accurate
MODEL_CONFIG_accurate := configs/unet_spider_accurate.yml
MODEL_CONFIG_fast := configs/unet_spider.yml
MODEL_FINETUNE_accurate := configs/unet_spider_accurate_finetune.yml
MODEL_CONTEXT_accurate := configs/unet_spider_accurate_25d.yml
MODEL_SLICES_accurate := -2,0,2
MODEL_CONFIG = $(or $(MODEL_CONFIG_$(MODEL)),$(error MODEL=$(MODEL): choose accurate or fast))
MODEL_FINETUNE = $(MODEL_FINETUNE_$(MODEL))
MODEL_CONTEXT = $(MODEL_CONTEXT_$(MODEL))
MODEL_FILE = models/lumbarseg-spine-t2-$(MODEL).onnx
RUN ?= build/runs/$(MODEL)
FINETUNE_RUN = $(if $(MODEL_FINETUNE),$(RUN)-finetune,$(RUN))
FINAL_RUN = $(if $(MODEL_CONTEXT),$(RUN)-25d,$(FINETUNE_RUN))

model: install
	$(PYTHON) -m lumbarseg dataset from-slices $(SPIDER)/images $(SPIDER)/masks --label-map spider-png \
		--spacing 0.47,0.47,0.9 --split 0.8,0.1,0.1 --seed 0 -o build/spider/spider.yml --overwrite
	$(PYTHON) -m lumbarseg train --dataset build/spider/spider.yml --config $(MODEL_CONFIG) --out $(RUN)
	$(if $(MODEL_FINETUNE),$(PYTHON) -m lumbarseg train --dataset build/spider/spider.yml --config $(MODEL_FINETUNE) \
		--init $(RUN)/best.onnx --out $(FINETUNE_RUN))
	$(if $(MODEL_CONTEXT),$(PYTHON) -m lumbarseg dataset context build/spider/spider.yml \
		--slices=$(MODEL_SLICES_$(MODEL)) -o build/spider/spider_25d.yml --overwrite)
	$(if $(MODEL_CONTEXT),$(PYTHON) -m lumbarseg train --dataset build/spider/spider_25d.yml \
		--config $(MODEL_CONTEXT) --init $(FINETUNE_RUN)/best.onnx --out $(FINAL_RUN))
	$(PYTHON) -m lumbarseg export $(FINAL_RUN) -o $(MODEL_FILE) --overwrite
	$(PYTHON) -m lumbarseg evaluate --dataset build/spider/spider.yml --split test --model $(MODEL_FILE) \
		-o $(FINAL_RUN)/test-report --overwrite

bench: install
	$(PYTHON) benchmarks/run.py

# The manual (mkdocs.yml, docs/): `make docs` builds it into build/site/ (strict: a broken link, anchor or page
# left out of the nav fails), `make docs-serve` serves it on http://127.0.0.1:8000, rebuilt on every change.
# `make test` builds it too (tests/docs/). The two variables silence the notices MkDocs' plugins print about MkDocs 2.
DOCS_ENV := NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true
DOCS_ADDR ?= 127.0.0.1:8000

docs: install
	$(DOCS_ENV) $(PYTHON) -m mkdocs build --strict

docs-serve: install
	$(DOCS_ENV) $(PYTHON) -m mkdocs serve --strict --dev-addr $(DOCS_ADDR)

# clean keeps .venv (a slow reinstall); `make distclean` removes it too.
clean:
	rm -rf build dist *.egg-info .make-installed* .pytest_cache

distclean: clean
	rm -rf $(VENV)

# --- Python 3.8 (the DeepHealth stack's Python): pyenv's 3.8 if there is one, else python3.8 on PATH.
# A venv with the pins the Docker images use; runs the import check (every module, `lumbarseg --help`)
# or the tests named in PY38_TESTS, e.g. `make test-py38 PY38_TESTS=tests`.
PYTHON38 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.8*/bin/python3.8) python3.8)
VENV38 := build/venv-py38
PY38_TESTS ?= tests/test_imports.py
PY38_TEST_PINS := pytest==8.3.5 pytest-timeout==2.3.1

$(VENV38)/.installed: docker/requirements-py38.txt
	$(PYTHON38) -m venv $(VENV38)
	$(VENV38)/bin/python -m pip install -q -r docker/requirements-py38.txt $(PY38_TEST_PINS)
	@touch $@

test-py38: $(VENV38)/.installed
	@# pip builds in build/lib, where setuptools never removes files deleted from the source
	rm -rf build/lib
	$(VENV38)/bin/python -m pip install -q --no-deps --force-reinstall .
	$(VENV38)/bin/lumbarseg --help > /dev/null
	@# the installed package, its bundled model, outside the checkout: segment the sample under Python 3.8
	cd build && ../$(VENV38)/bin/lumbarseg predict -i ../$(SAMPLE).nii.gz -o py38-demo/seg.nii.gz --overwrite
	$(VENV38)/bin/python -m pytest -q -p no:cacheprovider $(PY38_TESTS)

# --- Docker images on the DeepHealth stack (docker/; see the README's Docker section).
DOCKER ?= docker
IMAGE ?= lumbarseg
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' lumbarseg/__init__.py)
WITH_TORCH ?= 0
# docker-run-*: DATA is mounted read-only at /data, OUTPUT at /output; ARGS are lumbarseg's arguments.
DATA ?= $(CURDIR)/datasets
OUTPUT ?= $(CURDIR)/build/docker-output
ARGS ?= --help
DOCKER_RUN = $(DOCKER) run --rm --user "$$(id -u):$$(id -g)" -v "$(abspath $(DATA)):/data:ro" -v "$(abspath $(OUTPUT)):/output"

docker-cpu:
	$(DOCKER) build -f docker/Dockerfile.cpu --build-arg WITH_TORCH=$(WITH_TORCH) \
		-t $(IMAGE):$(VERSION)-cpu -t $(IMAGE):cpu .

docker-cuda:
	$(DOCKER) build -f docker/Dockerfile.cuda -t $(IMAGE):$(VERSION)-cuda -t $(IMAGE):cuda .

docker-run-cpu:
	mkdir -p "$(OUTPUT)"
	$(DOCKER_RUN) $(IMAGE):cpu $(ARGS)

docker-run-cuda:
	mkdir -p "$(OUTPUT)"
	$(DOCKER_RUN) --gpus all $(IMAGE):cuda $(ARGS)
