"""Benchmarks: ``python -m bench [--quick] [--json PATH]`` from the repository root.

Every comparison runs in one process and one run, against the same local
servers, so the ratios mean something on a noisy machine.
"""
