# Klaviyo Sync Console. `make help` lists the targets.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
export PYTHONPATH := $(CURDIR)

.DEFAULT_GOAL := help
.PHONY: help uv install dev test test-fast lint fmt types precommit pytest migrate create-admin simulator worker web vendor chromium node bench compose-check clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'

uv: ## install uv (from PyPI) when it is missing
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) --version >/dev/null

install: uv ## create .venv and install the locked dependencies
	@$(UV) sync --frozen --quiet

dev: install ## migrate the embedded SQLite db, then run web (:8000) + worker + sandbox simulator
	@$(RUN) python -m cli dev

migrate: install ## apply migrations to DATABASE_URL
	@$(RUN) python -m cli migrate

create-admin: install ## create an admin: make create-admin USER=alice
	@$(RUN) python -m cli create-admin $(USER)

web: install ## run only the web app
	@$(RUN) uvicorn web.app:create_app --factory --host 127.0.0.1 --port 8000 --no-proxy-headers

worker: install ## run only one arq worker
	@$(RUN) python -m workers

simulator: install ## run only the Klaviyo simulator on :8100
	@$(RUN) python -m simulator --port 8100

chromium: ## install Debian's chromium for the browser tests when it is missing
	@[ -x /usr/bin/chromium ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

lint: install ## ruff lint and format check
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .

fmt: install ## format and fix what ruff can
	@$(RUN) ruff format .
	@$(RUN) ruff check --fix .

types: install ## mypy (strict) on every package
	@$(RUN) mypy

precommit: install ## the pre-commit hooks (ruff check, ruff format, mypy) over every file
	@$(RUN) pre-commit run --all-files --show-diff-on-failure

pytest: install chromium node ## only the pytest suite
	@$(RUN) pytest $(PYTEST_ARGS)

test: install chromium node lint types ## lint, types and the whole suite against PostgreSQL, SQLite and Redis
	@$(RUN) pytest $(PYTEST_ARGS)

test-fast: install node lint types ## lint, types and the tests that need no service (seconds; PostgreSQL and Redis pointed at closed ports)
	@REDIS_URL=redis://127.0.0.1:1 TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:1/test \
	  $(RUN) pytest -m fast -q -o addopts="" $(PYTEST_ARGS)

compose-check: install ## build the image and run compose.yaml's services for real in podman (as root)
	@$(RUN) python -m tests.compose.check

vendor: ## refresh static/vendor from the npm registry (versions pinned in package.json)
	npm install --no-audit --no-fund
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp node_modules/@picocss/pico/css/pico.min.css static/vendor/pico.min.css
	cp node_modules/uplot/dist/uPlot.iife.min.js static/vendor/uplot.min.js
	cp node_modules/uplot/dist/uPlot.min.css static/vendor/uplot.min.css

node: ## install Node and the npm dev packages (the onsite snippet tests render and parse with them; the accessibility test runs axe-core)
	@command -v npm >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	@[ -d node_modules/acorn ] && [ -d node_modules/liquidjs ] && [ -d node_modules/handlebars ] && [ -d node_modules/twig ] && [ -d node_modules/axe-core ] \
	  || npm ci --no-audit --no-fund --loglevel=error

bench: install ## every benchmark in its quick form
	@for b in bench/*.py; do n=$$(basename $$b .py); case $$n in __init__|harness) continue;; esac; echo "== $$n"; $(RUN) python -m bench.$$n --quick | tail -1; done

clean: ## remove the environment and local data
	rm -rf .venv var test-artifacts .mypy_cache .ruff_cache .pytest_cache
