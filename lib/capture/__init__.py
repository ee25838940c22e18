"""Reading a capture: the proxy's requests table, its responses, the Claude Code JSONL logs, the two indexes."""
