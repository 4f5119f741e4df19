# sweeps: `make help` lists the targets.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Bind address of `make ui` / `make server`: SWEEPS_HOST, not HOST (which shells and containers export).
SWEEPS_HOST ?= 127.0.0.1
PORT    ?= 5000
STORE   ?= sqlite:///mlruns/mlflow.db

.DEFAULT_GOAL := help
.PHONY: help install data system test test-fast smoke sweep report ui server bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) data system ## venv in .venv with sweeps (editable), test tools and Ray; Fashion-MNIST, PostgreSQL, Chromium and SLURM via apt

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

data: ## Debian's dataset-fashion-mnist package (skipped when present or apt is unavailable)
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) || \
	  echo "note: could not apt-get install dataset-fashion-mnist; see README (data)"; \
	else echo "note: Fashion-MNIST not installed; run: sudo apt-get install dataset-fashion-mnist"; fi

system: ## Debian's postgresql (the team server and its test), chromium (the UI's test) and slurm-wlm + munge (a one-node SLURM cluster for the cluster tests); each skipped when present or apt is unavailable
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq postgresql)) || \
	  echo "note: could not apt-get install postgresql; the team-server test will be skipped"; \
	else echo "note: PostgreSQL not installed (sudo apt-get install postgresql); the team-server test will be skipped"; fi
	@if command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq chromium)) || \
	  echo "note: could not apt-get install chromium; the UI test will be skipped"; \
	else echo "note: chromium not installed (sudo apt-get install chromium); the UI test will be skipped"; fi
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq slurm-wlm munge)) || \
	  echo "note: could not apt-get install slurm-wlm munge; the SLURM tests will be skipped"; \
	else echo "note: SLURM not installed (sudo apt-get install slurm-wlm munge); the SLURM tests will be skipped"; fi

# TEST_WORKERS=2: two test files at a time (pytest-xdist, a file's tests stay together with their
# fixtures): 21 min against 24 here, as most of an end-to-end test is one process's single-threaded
# start-up. Not the default: which files share a process then changes from run to run, and CI runs
# the order every session has tested.
TEST_WORKERS ?= 1
test: install ## the whole test suite (what CI runs); TEST_WORKERS=2 runs two test files at a time
	$(BIN)/pytest -q -m "slow or not slow" $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test-fast: install ## tests not marked slow
	$(BIN)/pytest -q

smoke: install ## 4-job sweep on digits, 2 epochs, into a throwaway store
	@tmp=$$(mktemp -d) && MLFLOW_TRACKING_URI=sqlite:///$$tmp/mlflow.db $(BIN)/python -m sweeps.train -m \
	  reg=l1,l2 rate=1e-4,1e-3 data=digits epochs=2 hydra.sweep.dir=$$tmp/multirun && \
	  echo "smoke sweep OK (store: $$tmp/mlflow.db)"

sweep: install ## the main job: L1 vs L2 at two strengths on Fashion-MNIST, tracked in mlruns/
	$(BIN)/python -m sweeps.train -m reg=l1,l2 rate=1e-4,1e-3

report: install ## compare the latest sweep: table here, report in reports/<id>/ (SWEEP=<id> for another)
	$(BIN)/python -m sweeps.compare --tracking-uri $(STORE) $(if $(SWEEP),--sweep $(SWEEP))

ui: install ## MLflow UI over mlruns/ at http://127.0.0.1:5000, printing the link to the runs table (SWEEPS_HOST=, PORT=, STORE=)
	mkdir -p mlruns
	@exec $(BIN)/python -m sweeps.server --ui '$(STORE)' --host $(SWEEPS_HOST) --port $(PORT)  # not echoed, and exec: no command line keeps STORE, which may hold a password

server: install ## team store: mlflow server on PostgreSQL in mlruns/server, artifacts proxied (SWEEPS_HOST=, PORT=)
	$(BIN)/python -m sweeps.server --host $(SWEEPS_HOST) --port $(PORT)

bench: install ## side by side: tracking overhead and the per-epoch checkpoint, NaN check, launchers, grid vs Optuna, presets (plain Keras / sweeps / matmul limit), TensorFlow vs JAX, packed sweeps, UI/server footprint, start-up
	$(BIN)/python benchmarks/bench_logging.py
	$(BIN)/python benchmarks/bench_nan_check.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_presets.py
	$(BIN)/python benchmarks/bench_backends.py
	$(BIN)/python benchmarks/bench_packed.py
	$(BIN)/python benchmarks/bench_footprint.py
	$(BIN)/python benchmarks/bench_startup.py

clean: ## remove run outputs and caches (keeps mlruns/ and the venv)
	rm -rf multirun outputs reports .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
