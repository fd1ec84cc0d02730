# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install migrate seed lint bench clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

install: $(BIN)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

run: seed
	@echo "Serving on http://$(HOST):$(PORT)/ (alice, bob, carol / demo; admin / admin)"
	$(BIN)/daphne -b $(HOST) -p $(PORT) project.asgi:application

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/loadtest.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* .pytest_cache
