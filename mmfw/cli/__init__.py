"""The ``mmfw`` command line: :mod:`mmfw.cli.main` and one module per command (``train``, ``generate``, ``data``,
``list``, ``schema``, ``inspect``, ``export``, ``merge``). The top layer: it may import everything, nothing imports it.
"""
