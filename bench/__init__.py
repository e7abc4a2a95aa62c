"""Benchmarks that print figures (README: Benchmarks): latency, barge-in, concurrency, framework
overhead and the local brain's accuracy. Speed targets live here, not in timed tests."""
