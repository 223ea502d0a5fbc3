# Two entry points for a newcomer: `make demo` and `make test`.
# Both create .venv and install everything from package registries only.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench study clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch, pinned; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	# Everything else at the versions in constraints.txt (the set the suite last passed with).
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,interop,tensorboard,live,scale,nexus]'
	# The live view's browser test (tests/test_live_view.py) drives the distribution's
	# Chromium through Playwright; installed here as root (CI), never downloaded by Playwright.
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "note: install chromium (apt-get install chromium) for tests/test_live_view.py"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/labpgt demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Throughput and overhead figures for docs/performance.md (about 10 minutes).
bench: $(STAMP)
	$(BIN)/python benchmarks/sim_throughput.py
	$(BIN)/python benchmarks/loop_overhead.py
	$(BIN)/python benchmarks/scheduler.py
	$(BIN)/python benchmarks/calibration.py

# Every generated figure and table of docs/ (results.md, results_features.md,
# results_pgt-size.md, results_pat.md, results_transformer.md, results_mgd-scaling.md,
# gradient_quality.md), under the protocol (search on validation, 5 seeds, 95 % CI) on
# the current commit: several hours on 2 idle cores. Each part resumes.
study: $(STAMP)
	$(BIN)/labpgt study --preset digits --out benchmarks/results/study_digits --docs docs/results.md
	$(BIN)/labpgt study --preset features --out benchmarks/results/study_features --docs docs/results_features.md
	$(BIN)/labpgt study --preset pgt-size --out benchmarks/results/study_pgt-size --docs docs/results_pgt-size.md
	$(BIN)/labpgt study --preset pat --out benchmarks/results/study_pat --docs docs/results_pat.md
	$(BIN)/labpgt study --preset transformer --out benchmarks/results/study_transformer --docs docs/results_transformer.md
	$(BIN)/labpgt study --preset mgd-scaling --out benchmarks/results/study_mgd-scaling --docs docs/results_mgd-scaling.md
	$(BIN)/python benchmarks/gradient_quality.py --out docs/gradient_quality.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
