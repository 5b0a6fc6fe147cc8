"""Sweep executors: ``local`` (default), ``slurm`` (submitit) and ``ray``; see :mod:`mmfw.sweep.executors.base`."""
