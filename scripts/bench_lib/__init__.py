"""The pieces of scripts/bench.py: common helpers, the systems under test and
their servers, the workloads, and the report."""
