"""Benchmark scenarios behind ``securefl bench``."""
