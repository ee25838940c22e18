"""Tokens and chained block hashes of request prompts (docs/hashing), in one process or a worker pool."""
