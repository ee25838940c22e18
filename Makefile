# Two entry points for a fresh machine: `make example` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv example lint test bench screenshot clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	touch $@

venv: $(VENV)/.installed

# The seed walkthrough's commands, verbatim, on the bundled example.
example: venv
	$(PY) build_message_index.py examples/requests.db
	$(PY) build_conversation_index.py examples/requests.db --projects-path examples/jsonl/
	$(PY) build_minimal_traces.py examples/requests.db --jsonl-dir examples/jsonl/ \
		--output-dir examples/traces/ --block-size 64 --include-subagents --anonymize
	$(PY) validate_trace_cache.py examples/traces/ --db examples/requests.db --jsonl-dir examples/jsonl/
	$(PY) complete_cache_visualizer.py examples/requests.db --conversation-id combined \
		--output examples/visualizations/combined.html

# ruff and mypy are configured in pyproject.toml; mypy checks lib/.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q tests

bench: venv
	$(PY) -m bench.run --size 200MB

screenshot: venv
	UPDATE_SCREENSHOT=1 $(PY) -m pytest -q tests/test_dashboard_browser.py

clean:
	rm -rf $(VENV) examples/traces examples/visualizations
