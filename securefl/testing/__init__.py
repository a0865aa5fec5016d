"""Test support: slow, obviously-correct reference implementations of the core.

Nothing here is used by the library itself; tests and benchmarks compare the native
kernels against it.
"""
