# Every target installs what it needs: on a fresh machine `make fit` and `make test` just work.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
MYPT := $(VENV)/bin/mypt
# the CPU wheel on this project's machines; on a GPU box pip picks the CUDA build of the same release
TORCH_VERSION ?= 2.13.0
# The main job trains configs/dante.yaml (the design note's model) where a GPU is present; on a
# CPU-only machine it trains configs/dante_cpu.yaml, which finishes in minutes. CONFIG=... overrides;
# ARGS=... adds mypt fit options (e.g. ARGS="--trainer.max_steps 300").
CONFIG ?=
ARGS ?=
SHARED_DATA ?= ../shared/data

.PHONY: install test fit tensorboard bench bench-gpu bench-tokenizers stress lint clean data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==$(TORCH_VERSION) || $(PY) -m pip install -q 'torch>=2.4,<3'
	$(PY) -m pip install -q -e '.[dev,hf,data]'
	touch $@

install: $(VENV)/.installed

# Example texts: copied from ../shared/data when it is there; otherwise `mypt fit` downloads the
# config's url.
data:
	@mkdir -p data
	@for f in divina_commedia.txt tinyshakespeare.txt; do \
	  if [ ! -f data/$$f ] && [ -f $(SHARED_DATA)/$$f ]; then cp $(SHARED_DATA)/$$f data/$$f; fi; \
	done

test: install
	$(PY) -m pytest

fit: install data
	@config="$(CONFIG)"; \
	if [ -z "$$config" ]; then \
	  if $(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	    config=configs/dante.yaml; \
	  else \
	    config=configs/dante_cpu.yaml; echo "no GPU: training $$config (make fit CONFIG=configs/dante.yaml for the full model)"; \
	  fi; \
	fi; \
	$(MYPT) fit --config $$config $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir logs

bench: install data
	$(PY) benchmarks/run.py

bench-gpu: install data
	$(PY) benchmarks/run.py --gpu

# char, gpt2, bpe-1k and bpe-4k on the Divina Commedia, 120 CPU seconds of training each (~10 minutes)
bench-tokenizers: install data
	$(PY) benchmarks/tokenizer_choice.py

stress: install
	$(PY) -m pytest -m stress -p no:cacheprovider -q -o addopts=""

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
