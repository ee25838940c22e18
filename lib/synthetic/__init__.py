"""A fake capture in the real proxy and JSONL formats: the bundled example and benchmark corpora (not used by the tools)."""
