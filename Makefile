# sms-consent-gateway: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
STAMP := $(VENV)/.installed

.PHONY: run test lint format install clean bench

$(STAMP): pyproject.toml
	@echo "==> creating virtualenv in $(VENV) and installing the app with its dev extras"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@echo "==> migrating the database (DATABASE_URL, default: a SQLite file under instance/)"
	@$(BIN)/flask --app app db upgrade
	@echo "==> starting the web app on http://127.0.0.1:$(PORT) and the sender worker (Ctrl-C stops both)"
	@echo "    try it:  $(BIN)/flask --app app simulate +14155550100 JOIN"
	@trap 'kill 0' INT TERM EXIT; \
	  $(BIN)/flask --app app worker & \
	  $(BIN)/gunicorn --bind 127.0.0.1:$(PORT) --workers 2 --access-logfile - "app:create_app()" & \
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

clean:
	rm -rf $(VENV) .pytest_cache instance/*.sqlite3*
