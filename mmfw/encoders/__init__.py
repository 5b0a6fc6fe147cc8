"""Vision encoders: pixels -> one feature row per patch.

The contract is :class:`mmfw.encoders.base.VisionEncoder` (its :class:`~mmfw.specs.VisionSpec` tells the image
strategy the native size, patch size and normalisation); one file per family: ``clip`` and ``siglip`` (transformers,
sharing :mod:`mmfw.encoders.hf_vit`), ``eva02`` (timm), ``open-clip``. Import the modules themselves; this package
module imports nothing, so that reading a config does not import the model libraries.
"""
