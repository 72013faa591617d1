# Two commands set up a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data
export WANDB_MODE ?= offline

.PHONY: install demo demo-generic test lint format data lm pareto bench clean

LM ?= models/lm/synthetic-6gram-charlm.arpa

install: $(STAMP)

# requirements.lock pins torch==2.13.0 (the CPU wheel on these machines) and everything else.
$(STAMP): requirements.lock setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The main job: synthetic demo data (generated once), TC_S4_small personalized on one synthetic
# user; then its best checkpoint on the 80 s validation chunks (valcont_*.ckpt, the paper's
# protocol) evaluated with the greedy decoder and with beam search + the synthetic character
# 6-gram LM (docs/benchmark.md).
DEMO_DIR ?= outputs/demo
# One intra-op thread: these small models ran ~8x more updates/s than with two competing threads.
THREADS ?= 1
# The paper's best regime on synthetic data: the committed generic TC_S4_small fine-tuned on
# synthetic user 0 (conf/experiment/demo_finetune.yaml); DEMO_EXPERIMENT=demo trains from scratch.
DEMO_EXPERIMENT ?= demo_finetune
demo: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m emg2qwerty_ssm.train experiment=$(DEMO_EXPERIMENT) hydra.run.dir=$(DEMO_DIR)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m emg2qwerty_ssm.train experiment=$(DEMO_EXPERIMENT) train=false decoder=ctc_beam decoder.lm_path=$(LM) \
		checkpoint=$$($(PY) -c "import json; print(json.load(open('$(DEMO_DIR)/results.json'))['checkpoint'])") \
		hydra.run.dir=$(DEMO_DIR)/beam_lm

# Retrain the generic model `make demo` starts from (the demo preset's generic pool, ~10 min of
# one core) into GENERIC_DIR and print its checkpoint; use it with `make demo
# DEMO_EXPERIMENT="demo_finetune checkpoint=PATH"`. The committed file is never overwritten.
GENERIC_DIR ?= outputs/demo_generic
demo-generic: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m emg2qwerty_ssm.train experiment=demo user=synth_generic hydra.run.dir=$(GENERIC_DIR)
	@echo "generic model: $$($(PY) -c "import json; print(json.load(open('$(GENERIC_DIR)/results.json'))['checkpoint'])")"

test: $(STAMP)
	OMP_NUM_THREADS=1 WANDB_MODE=disabled $(PY) -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(VENV)/bin/ruff check emg2qwerty_ssm hydra_plugins scripts tests benchmarks
	$(VENV)/bin/ruff format --check emg2qwerty_ssm hydra_plugins scripts tests benchmarks
	$(VENV)/bin/mypy emg2qwerty_ssm
	$(VENV)/bin/mypy --namespace-packages --explicit-package-bases -p hydra_plugins.emg2qwerty_optuna_sweeper

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

# The budget sweep on synthetic data (every size x SEEDS) in PARALLEL single-thread streams,
# then the CER-vs-MAC/s figure with mean +- sd over the seeds (docs/compute.md). Resumable: the
# same command again skips finished jobs and resumes a killed one from its last.ckpt.
# SIZES: a comma-separated subset of sweeps/pareto_size/ (empty: all of the sweep's sizes).
PARETO_DIR ?= multirun/pareto_synthetic
SEEDS ?= 0,1,2
PARALLEL ?= 2
SIZES ?=
pareto: $(STAMP)
	$(PY) scripts/run_pareto.py --sweep-dir $(PARETO_DIR) --seeds $(SEEDS) --parallel $(PARALLEL) \
		--threads $(THREADS) $(if $(SIZES),--sizes $(SIZES)) --metric test/paper/greedy \
		--out docs/figures/pareto_synthetic

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache .mypy_cache

# Cortex-M cross compiler, newlib and QEMU for `python -m emg2qwerty_ssm.export target=cortex-m4|cortex-m7`
# and tests/test_export_mcu.py (see docs/mcu.md); apt-get runs only when a tool is missing.
.PHONY: mcu-toolchain
mcu-toolchain:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
		&& test -f /usr/lib/arm-none-eabi/newlib/libc.a -o -f /usr/lib/arm-none-eabi/lib/libc.a; then \
		echo "mcu-toolchain: arm-none-eabi-gcc, newlib and qemu-system-arm present"; \
	else \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends \
			gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm'; \
	fi

# --- Scale-out: real PostgreSQL and SLURM for the Optuna and cluster tests (docs/cluster.md) ---
.PHONY: ci-deps slurm-local slurm-local-stop

CI_APT_PACKAGES := postgresql slurm-wlm munge

# Everything the CI-only tests need: the MCU toolchain, and the servers
# tests/test_optuna_postgres.py and tests/test_slurm.py start (apt-installed if missing).
ci-deps: mcu-toolchain
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v slurmctld >/dev/null \
		&& command -v munged >/dev/null; then echo "ci-deps: $(CI_APT_PACKAGES) present"; \
	else $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
		sh -c 'apt-get update -qq && apt-get install -y -qq $(CI_APT_PACKAGES)'; fi

# a single-node SLURM cluster on this machine (root); then: eval "$$(scripts/slurm_local.sh env)"
slurm-local:
	scripts/slurm_local.sh start

slurm-local-stop:
	scripts/slurm_local.sh stop

# ---- Reproduce the paper (docs/reproduce.md): generic -> fine-tune user0..7 -> greedy + LM -> tables
# make paper DATA=/path/to/emg2qwerty [MODEL="tc_s4_small"] [PAPER_ARGS="--baseline-dir ... --set trainer=gpu"]
.PHONY: paper
MODEL ?= s4_large tc_s4_medium tc_s4_small
PAPER_DIR ?= outputs/paper
PAPER_ARGS ?=
paper: $(STAMP)
	@case "$(origin DATA)" in "command line"|environment) ;; *) echo "make paper: pass DATA=/path/to/emg2qwerty (the real dataset root)"; exit 2;; esac
	@test -d "$(DATA)" || { echo "make paper: DATA=$(DATA) is not a directory (the emg2qwerty dataset root)"; exit 2; }
	$(PY) scripts/reproduce_paper.py --data $(DATA) --models $(MODEL) --out $(PAPER_DIR) $(PAPER_ARGS)
