"""mmfw plugin: the ``dinov2`` vision encoder."""
