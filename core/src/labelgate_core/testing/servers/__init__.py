"""Real servers for tests and benchmarks, started on free local ports and stopped afterwards."""
