"""mmfw's benchmark suite: each comparison against what a user would otherwise run (transformers), correctness first.

    python -m benchmarks [--smoke] [--only NAME ...] [--repeats N] [--threads 1] [--out results.json] [--render]

See ``docs/performance.md`` for what each benchmark measures and the latest numbers. The older stand-alone scripts
``benchmarks/packing.py`` and ``benchmarks/inspect_time.py`` still run on their own.
"""
