"""Claude Code KV-cache trace suite: all logic behind the five command-line scripts.

One request's way from a proxy DB row to a trace line: `capture` (rows, responses, JSONL logs and
the indexes) → `hashing` (tokens and chained block hashes) → `traces` (plans, formats, writer).
`cache` simulates caches over block ids; `validate` and `report` compare them with the API's usage.
`synthetic` generates fake captures for the examples, the benchmark and the tests. The modules at
this level are the shared core; `tests/test_package_layout.py` keeps imports in that order.
"""

__version__ = "0.1.0"
