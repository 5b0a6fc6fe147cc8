"""Ablation studies: one sweep file expands into validated runs that an executor trains; a report compares them.

:mod:`~mmfw.sweep.spec` (the sweep file), :mod:`~mmfw.sweep.points` (the axes expanded into points),
:mod:`~mmfw.sweep.expand` (configs, fingerprints, validation), :mod:`~mmfw.executors.runs` (run directories and the
``mmfw train`` job), :mod:`~mmfw.executors` (local, Slurm, Ray), :mod:`~mmfw.sweep.study` (a whole study),
:mod:`~mmfw.sweep.results` (the runs read back, seed noise), :mod:`~mmfw.sweep.report` (tables) and
:mod:`~mmfw.sweep.plots` (figures). This package sits above ``mmfw.training``; nothing below imports it.
"""
