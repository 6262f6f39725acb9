# Two commands do all the set-up on a fresh machine (Python 3.11+ and a C compiler):
#   make demo   - the whole system on embedded PostgreSQL and Redis, a sample batch to completion
#   make test   - lint and the full test suite against real PostgreSQL, Redis, workers and the simulator
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo up test chaos chaos-smoke lint format clean bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,embedded,report]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/aperture demo

up: $(BIN)/.installed
	$(BIN)/aperture up

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Headless Chromium for the report's test and RabbitMQ for the tests on it (Debian's packages, installed
# when missing and RabbitMQ started when not running: as root); then lint and types beside the chaos suite at
# smoke size on both brokers (on RabbitMQ only the scenarios where the broker decides what is lost: kill -9 of
# the workers, a cluster node killed, a partition from the broker), four scenarios at a time, each in a
# process of its own with its own servers and printed whole: they mostly wait on outages and recoveries, so
# lint's minute of CPU fits beside them; either failing fails the run. Then the tests in three processes on
# the two cores (each with its own databases, Redis database, simulator and worker: most tests wait on the
# simulator's clock), whose summary closes the run with the 15 slowest.
test: $(BIN)/.installed
	scripts/ensure-chromium.sh
	scripts/ensure-rabbitmq.sh
	$(MAKE) --no-print-directory -j2 lint chaos-smoke
	$(BIN)/python -m pytest -n 3 --durations=15

chaos-smoke: $(BIN)/.installed
	$(BIN)/python -m chaos --size smoke --broker both --parallel 4

# Benchmarks at full size: a million jobs for the sweeper, a million assets and ten million tags for
# the library (several minutes; figures in docs/benchmarks.md). Smaller or fewer runs, for example:
#   make bench BENCH_JOBS=100000 BENCH_ASSETS=100000 BENCH_ARGS="--runs 5"
BENCH_JOBS ?= 1000000
BENCH_ASSETS ?= 1000000
BENCH_TAGS_PER_ASSET ?= 10
BENCH_ARGS ?=
# The fleet rate limit: 2,000 jobs through 4 worker processes at R = 20 requests/s (5 to 10 minutes).
BENCH_RATELIMIT_JOBS ?= 2000
# Adaptive polling against the fixed 5 minutes and an oracle: 2,000 jobs on a simulated clock (about 4 minutes).
BENCH_POLLING_JOBS ?= 2000
# The dispatcher: 100,000 looks due at once; 10,000 and 100,000 jobs in flight, falling due at 0.6 of what
# the worker sustains (3 minutes measured of each); throughput of 5,000 jobs for four worker pools (about 15 minutes in all).
BENCH_BURST_LOOKS ?= 100000
BENCH_INFLIGHT_JOBS ?= 10000 100000
BENCH_THROUGHPUT_JOBS ?= 5000
# Reuse: 1,000 URLs tagged then asked for again, and workloads where 30% of assets repeat, with reuse on and
# off (APERTURE_REUSE_TTL_S=0) side by side (a few minutes).
BENCH_REUSE_URLS ?= 1000
# Batching: 1,000 single-asset requests arriving over 60 s, with the default window and with batching off (3 minutes).
BENCH_BATCHING_REQUESTS ?= 1000
# Fair admission: a cap of 20 open Vidmob jobs, 5 s jobs; A sends 2,000 at once while B sends one every 2 s, then
# A and C 1,000 each; the fair order and today's (APERTURE_ADMISSION=recheck) side by side (about 40 minutes).
BENCH_FAIRNESS_ARGS ?= --cap 20 --job-s 5 --a-requests 2000 --b-every 2 --ac-requests 1000

# Both brokers side by side: 100,000 jobs in flight on RabbitMQ (countdowns held by a private node) and on Redis
# (parked), 3 minutes measured of each (about 25 minutes in all); then Redis's held messages after a kill -9 of
# the worker (about 5 minutes) and a Redis restart under a busy worker.
BENCH_BROKER_JOBS ?= 100000

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_sweeper.py --jobs $(BENCH_JOBS) $(BENCH_ARGS)
	$(BIN)/python bench/bench_library.py --assets $(BENCH_ASSETS) --tags-per-asset $(BENCH_TAGS_PER_ASSET) $(BENCH_ARGS)
	$(BIN)/python bench/bench_ratelimit.py --jobs $(BENCH_RATELIMIT_JOBS) --rate 20
	$(BIN)/python bench/bench_polling.py --jobs $(BENCH_POLLING_JOBS)
	$(BIN)/python bench/bench_dispatcher.py burst --looks $(BENCH_BURST_LOOKS)
	$(BIN)/python bench/bench_dispatcher.py inflight --jobs $(BENCH_INFLIGHT_JOBS)
	$(BIN)/python bench/bench_throughput.py --jobs $(BENCH_THROUGHPUT_JOBS)
	$(BIN)/python bench/bench_reuse.py --urls $(BENCH_REUSE_URLS)
	$(BIN)/python bench/bench_batching.py --requests $(BENCH_BATCHING_REQUESTS)
	$(BIN)/python bench/bench_tags.py
	$(BIN)/python bench/bench_fairness.py $(BENCH_FAIRNESS_ARGS)
	$(BIN)/python bench/bench_brokers.py --jobs $(BENCH_BROKER_JOBS)
	$(BIN)/python bench/bench_delays.py
	$(BIN)/python bench/bench_redis_held.py kill
	$(BIN)/python bench/bench_redis_held.py restart

# Kill -9, broker and database outages, API faults, hostile messages, a RabbitMQ node and the PostgreSQL
# primary killed, network partitions: one row per scenario and broker (docs/reliability.md).
# CHAOS_ARGS="--size smoke --only a,f" for a quick run.
CHAOS_ARGS ?= --size full --broker both
chaos: $(BIN)/.installed
	$(BIN)/python -m chaos $(CHAOS_ARGS)

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .aperture .pytest_cache .ruff_cache
