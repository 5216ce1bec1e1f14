# sms-consent-gateway: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
STAMP := $(VENV)/.installed

.PHONY: run test lint format install clean bench
LOADGEN := bench/loadgen/target/release/loadgen

$(STAMP): pyproject.toml
	@echo "==> creating virtualenv in $(VENV) and installing the app with its dev extras"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# `make run` is for people at a terminal: text logs unless LOG_FORMAT says otherwise.
run: export LOG_FORMAT := $(or $(LOG_FORMAT),text)
run: $(STAMP)
	@echo "==> migrating the database (DATABASE_URL, default: a SQLite file under instance/)"
	@$(BIN)/flask --app app db upgrade
	@echo "==> starting the web app on http://127.0.0.1:$(PORT) and the sender worker (Ctrl-C stops both)"
	@echo "    try it:  $(BIN)/flask --app app simulate +14155550100 JOIN"
	@trap 'trap - INT TERM EXIT; kill 0' INT TERM EXIT; \
	  $(BIN)/flask --app app worker & \
	  $(BIN)/gunicorn --bind 127.0.0.1:$(PORT) --workers 2 "app:create_app()" & \
	  wait

test: $(STAMP)
	@echo "==> running the test suite (SQLite$${TEST_DATABASE_URL:+ and PostgreSQL at $$TEST_DATABASE_URL})"
	@$(BIN)/python -m pytest

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

format: $(STAMP)
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

bench: $(STAMP) $(LOADGEN)
	@echo "==> running the benchmark suite (make bench ARGS=--quick for a few minutes;"
	@echo "    PostgreSQL from BENCH_PG_URL, default postgres@127.0.0.1:5432); results in bench/results/"
	@$(BIN)/python -m bench.run $(ARGS)

$(LOADGEN): bench/loadgen/Cargo.toml bench/loadgen/src/main.rs
	@echo "==> building the load generator (Rust, standard library only)"
	@command -v cargo >/dev/null || { echo "cargo is needed to build bench/loadgen (apt-get install cargo)"; exit 1; }
	@cargo build --release --offline --quiet --manifest-path bench/loadgen/Cargo.toml

clean:
	rm -rf $(VENV) .pytest_cache instance/*.sqlite3* bench/loadgen/target
