"""Claude Code KV-cache trace suite: all logic behind the five command-line scripts."""

__version__ = "0.1.0"
