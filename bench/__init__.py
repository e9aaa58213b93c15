"""FlowForge benchmarks: ``make bench`` (or ``python -m bench``) runs them and writes
``bench/results.json``.

Each benchmark is a module with ``run(quick: bool) -> list[Figure]``, listed in
:data:`bench.__main__.BENCHMARKS`. They never run under pytest: they are slow, and their
figures depend on the machine.
"""
