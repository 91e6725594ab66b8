# Each target sets itself up: a virtualenv in .venv, torch 2.13.0 first, then the package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo reproduce test test-slow bench setup system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) system-deps

# Debian packages the built-in tasks use: Fashion-MNIST images and the espeak-ng synthesiser.
# Installed when apt is available and they are missing; otherwise a message says what to do.
system-deps:
	@if [ -d /usr/share/datasets/fashion-mnist ] && command -v espeak-ng >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist espeak-ng >/dev/null) \
	  || echo "warning: could not apt-get install dataset-fashion-mnist espeak-ng"; \
	else echo "note: install Debian packages dataset-fashion-mnist and espeak-ng (or see README: --data-dir)"; fi

# glibc would return big activations to the kernel after every step and fault them in again;
# these thresholds keep them (docs/benchmarks.md, "glibc malloc"). OMP_WAIT_POLICY=ACTIVE keeps
# OpenMP's threads spinning between the step's thousands of small parallel ops instead of
# sleeping and being woken for each: 30 % more demo steps per minute on 2 cores (docs/benchmarks.md,
# "OpenMP threads waiting"). A spinning thread keeps a core busy even while its process idles, so
# make reproduce, whose parent process waits while its workers train, gets the thresholds only.
MALLOC_ENV := MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824
DEMO_ENV := $(MALLOC_ENV) OMP_WAIT_POLICY=ACTIVE

# Each `make demo` starts over in runs/demo (--overwrite deletes the previous demo's checkpoints,
# logs and results); `make demo ARGS=--resume` continues the last one instead.
demo: setup
	$(DEMO_ENV) $(VENV)/bin/multimodel train --config demo --run-dir runs/demo \
		$(if $(findstring --resume,$(ARGS)),,--overwrite) $(ARGS)

# Every question of the paper on the eight built-in tasks (3 seeds, 1 h 49 min on 2 cores; the
# budget is printed before the first run) into results/reproduce/report.md; RQ4 also on the real WSJ
# sample when ../shared/corpora holds it. Re-running resumes. ARGS=--estimate-only prints the plan and
# budget only; ARGS="--quick --out results/reproduce-quick" runs the whole pipeline at toy size in
# under a minute. Two runs train at once (REPRODUCE_JOBS=1 for one at a time).
CORPORA := $(wildcard ../shared/corpora)
REPRODUCE_JOBS ?= 2
reproduce: setup
	$(MALLOC_ENV) $(VENV)/bin/multimodel reproduce --out results/reproduce --jobs $(REPRODUCE_JOBS) \
		$(if $(CORPORA),data.corpora_dir=$(CORPORA)) $(ARGS)

# The suite (< 10 minutes on 2 cores); longer checks are marked slow and run by `make test-slow`.
test: setup
	$(PY) -m pytest -n 2 -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -n 2 -q -m slow

# Huge pages for big tensors and make demo's malloc thresholds: the MoE's per-step expert
# gradients (up to 2 x 512 MB at 256 experts) are otherwise page-faulted in afresh every step
# (docs/benchmarks.md, "glibc malloc" and "Huge pages").
bench: setup
	$(DEMO_ENV) THP_MEM_ALLOC_ENABLE=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs data .pytest_cache
