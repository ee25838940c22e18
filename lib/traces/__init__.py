"""build_minimal_traces: trace plans, the native and Mooncake formats, the writer and the run."""
