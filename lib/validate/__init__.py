"""validate_trace_cache: trace files, schema, statistics table, matching to the DB, simulated vs API."""
