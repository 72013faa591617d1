# Two commands set up a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data
export WANDB_MODE ?= offline

.PHONY: install demo test lint format data lm pareto bench clean

LM ?= models/lm/synthetic-6gram-charlm.arpa

install: $(STAMP)

# requirements.lock pins torch==2.13.0 (the CPU wheel on these machines) and everything else.
$(STAMP): requirements.lock setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The main job: synthetic data (generated once), TC_S4_small personalized on one synthetic user.
demo: $(STAMP)
	$(PY) -m emg2qwerty_ssm.synthetic --preset demo --out $(DATA)/synthetic-demo --seed 0 --skip-existing
	$(PY) scripts/print_dataset_stats.py --root $(DATA)/synthetic-demo

test: $(STAMP)
	OMP_NUM_THREADS=1 WANDB_MODE=disabled $(PY) -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(VENV)/bin/ruff check emg2qwerty_ssm hydra_plugins scripts tests benchmarks
	$(VENV)/bin/ruff format --check emg2qwerty_ssm hydra_plugins scripts tests benchmarks
	$(VENV)/bin/mypy emg2qwerty_ssm

format: $(STAMP)
	$(VENV)/bin/ruff format emg2qwerty_ssm hydra_plugins scripts tests benchmarks
	$(VENV)/bin/ruff check --fix emg2qwerty_ssm hydra_plugins scripts tests benchmarks

data: $(STAMP)
	$(PY) -m emg2qwerty_ssm.synthetic --preset demo --out $(DATA)/synthetic-demo --seed 0

# Character 6-gram LM from the synthetic prompts' text source (the committed one is rebuilt);
# builds KenLM's lmplz/build_binary into build/kenlm/bin first if missing (apt Boost packages).
lm: $(STAMP)
	PYTHON=$(PY) scripts/build_lmplz.sh build/kenlm
	$(PY) scripts/build_char_lm.py --synthetic-prompts $(LM) --order 6

# Speed benchmarks, run by hand; results are written down in docs/.
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_beam_decoder.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_recurrent_frontends.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_data_loading.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache .mypy_cache
