"""The paper's comparison: test-slice selection, the benchmark runner, tables and figures."""
