"""The Flink jobs shipped in the mlvigil package as mlvigil.jobs (monitor.py: the monitor job)."""
