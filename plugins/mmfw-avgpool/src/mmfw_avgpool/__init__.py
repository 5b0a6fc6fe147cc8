"""Example third-party mmfw plugin: the ``avgpool-mlp`` connector."""
