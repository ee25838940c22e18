# Two entry points for a fresh machine: `make example` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv example test bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

example: venv
	$(PY) build_message_index.py examples/requests.db
	$(PY) build_conversation_index.py examples/requests.db --projects-path examples/jsonl/

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) examples/traces examples/visualizations
