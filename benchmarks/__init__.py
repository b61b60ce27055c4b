"""pytest-benchmark suites of hitrs_fast (not collected by the default ``pytest`` run)."""
