# The two commands a user needs (README):  make run   and   make test
# Both create the virtual environment on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.yaml
CORES ?= all
PROFILE ?= profiles/local
# SEEDS=N runs seeds 0 … N−1 instead of the config's (docs/claims.md): only the new seeds' jobs
# and the claims run, the rest is cached.
SEEDS ?=
# A preset replaces config.yaml entirely instead of being merged into it.
SNAKEMAKE = $(BIN)/snakemake --profile $(PROFILE) --cores $(CORES) --configfile $(CONFIG) --replace-workflow-config $(if $(SEEDS),--config seeds=$(SEEDS))
RESULTS = $(shell $(BIN)/python -c "import yaml; print(yaml.safe_load(open('$(CONFIG)')).get('results', 'results'))" 2>/dev/null)
REPORT = $(RESULTS)/report.html

.PHONY: fetch plan run rehearse rehearse-all rehearse-ci report test test-numerics venv clean

# oodrepro.launch: one-line errors for a missing or invalid config, and unlocking after a killed run
run: $(BIN)/.installed
	$(BIN)/python -m oodrepro.launch $(CONFIG) -- $(SNAKEMAKE) $(ARGS)
	@$(MAKE) --no-print-directory report CONFIG=$(CONFIG) PROFILE=$(PROFILE) SEEDS=$(SEEDS)
	@if [ -f "$(RESULTS)/summary.md" ]; then echo "Summary: $(RESULTS)/summary.md (and .html); report: $(REPORT)"; fi

# Every archive the config reads, downloaded, verified and pinned in the data folder's lock file:
# on a cluster, run it on the login node before submitting (README, "Running on a cluster").
fetch: $(BIN)/.installed
	$(BIN)/python -m oodrepro.fetch $(CONFIG)

# What a run would submit, per rule: jobs, GPUs, partition, time limit (a dry run); with
# PROFILE=profiles/slurm, what a cluster run asks SLURM for.
plan: $(BIN)/.installed
	@planned=$$($(SNAKEMAKE) --dry-run 2>&1) || { echo "$$planned" | tail -n 15 >&2; exit 1; }; \
		echo "$$planned" | $(BIN)/python -m oodrepro.plan

# A preset's own DAG on stand-in archives with shrunk budgets, then its full-scale cost estimate
# (docs/rehearsal.md); PROFILE=profiles/slurm rehearses on a cluster.
rehearse: $(BIN)/.installed
	@rehearsal=$$($(BIN)/python -m oodrepro.rehearsal prepare $(CONFIG)) && \
		$(MAKE) --no-print-directory run CONFIG=$$rehearsal PROFILE=$(PROFILE) ARGS="$(ARGS)"
	$(BIN)/python -m oodrepro.rehearsal estimate $(CONFIG)

# Every preset, one after another; CI rehearses the CIFAR-10 presets, whose CIFAR-100 twins run
# the same rules, converters, architectures and scores (tests/test_rehearsal.py checks it).
REHEARSE_CI = presets/fashion-mnist.yaml presets/featurenorm-cvpr23.yaml presets/la-ood-pakdd22.yaml presets/openood-cifar10-resnet18.yaml presets/openood-v15-cifar10.yaml presets/unleashing-mask-icml23.yaml presets/watermarking-neurips22.yaml presets/watermarknn-usenix18.yaml
PRESETS ?= $(wildcard presets/*.yaml)
rehearse-all: $(BIN)/.installed
	@for preset in $(PRESETS); do $(MAKE) --no-print-directory rehearse CONFIG=$$preset ARGS="$(ARGS)" || exit 1; done

# One core a job: on a small CI machine two jobs side by side keep both cores busy (a network job
# on two threads used 1.3 of them); results do not depend on it, and a rehearsal run by hand keeps
# the preset's own thread requests.
rehearse-ci: $(BIN)/.installed
	@$(MAKE) --no-print-directory rehearse-all PRESETS="$(REHEARSE_CI)" ARGS="--max-threads 1 $(ARGS)"

# The HTML report is rebuilt only when a result is newer than it, so a rerun does nothing.
report: $(BIN)/.installed
	@if [ ! -f "$(RESULTS)/summary.html" ]; then echo "No results in $(RESULTS) yet: no report."; \
	elif [ ! -f "$(REPORT)" ] || [ -n "$$(find $(RESULTS) -type f -newer $(REPORT) ! -path '*/logs/*' -print -quit)" ]; then \
		$(SNAKEMAKE) --report $(REPORT); \
	else echo "Report up to date: $(REPORT)"; fi

# Test files run side by side, TEST_WORKERS at a time (pytest-xdist; a file's tests stay in one
# worker, so its module fixtures run once): on a 2-core AMD EPYC 17 min instead of 23.
TEST_WORKERS ?= 2
test: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# The tests that train or fit (marker `fits`) again, under float rounding no CPU uses natively:
# ATen's scalar kernels, oneDNN at SSE4.1, one thread. A test that holds only under one CPU's
# rounding fails here on every machine, not only on some.
NUMERICS = ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 OMP_NUM_THREADS=1
test-numerics: $(BIN)/.installed
	$(NUMERICS) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m fits $(ARGS)

venv: $(BIN)/.installed

# torch from the registry is the CUDA build: the environment takes about 6 GiB of disk.
$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c "import shutil; free = shutil.disk_usage('.').free / 2**30; free < 7 and print(f'warning: {free:.1f} GiB free here; the virtual environment needs about 6 GiB (torch and its CUDA libraries): free some space if pip stops with \"No space left on device\"')"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf results rehearsal .snakemake
