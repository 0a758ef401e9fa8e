# compute_bridge: the two commands a newcomer needs are `make run` and `make test`.
# Each sets up what it needs (venv, RabbitMQ, PostgreSQL, Odoo source) and is safe to repeat.

VENV ?= .venv
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all venv run test test-services test-odoo lint bench readme diagrams clean

all: test

venv: $(VENV)/.installed

# The venv is rebuilt when a requirements file changes. setuptools < 81: nameko 2.14.1's CLI
# imports pkg_resources, which setuptools 81 removed.
$(VENV)/.installed: requirements-dev.txt requirements-odoo.txt services/requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check 'pip<25' 'setuptools<81'
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

## RabbitMQ + PostgreSQL + the Nameko services + Odoo, in the foreground; Ctrl-C stops all.
run: venv
	tools/run.sh

## Every test layer against real RabbitMQ, PostgreSQL, Nameko processes and Odoo.
test: venv
	tools/test.sh all

test-services: venv
	tools/test.sh services

test-odoo: venv
	tools/test.sh odoo

lint: venv
	tools/test.sh lint

## BENCH_ARGS=--quick: small sizes, to try it out (see tools/bench.sh).
bench: venv
	tools/bench.sh $(BENCH_ARGS)

## compute_bridge/README.rst and static/description/index.html from compute_bridge/readme/*.md.
readme: venv
	$(VENV)/bin/python tools/gen_addon_readme.py

## docs/*.svg from docs/*.dot (Graphviz dot: apt-get install graphviz).
diagrams:
	$(PYTHON) tools/gen_diagrams.py

clean:
	-$(PYTHON) tools/stack.py down
	rm -rf .run
