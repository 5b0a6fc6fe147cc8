"""mmfw models in transformers: config, model and processor classes, registered with the Auto classes.

Importing this package registers ``model_type: "mmfw"`` with ``AutoConfig``, ``AutoModelForImageTextToText``,
``AutoImageProcessor`` and ``AutoProcessor``, so a directory
written by ``mmfw export RUN OUT --format hf`` loads with::

    import mmfw.hf  # noqa: F401  (registers the classes)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(OUT)
    processor = AutoProcessor.from_pretrained(OUT)

The exported ``config.json`` also names these classes in ``auto_map`` (small shim modules written next to it), so
``from_pretrained(OUT)`` with ``trust_remote_code`` turned on works without the import, wherever mmfw is installed.
"""

from __future__ import annotations

from mmfw.hf.configuration import MMFWConfig
from mmfw.hf.modeling import MMFWForConditionalGeneration, MMFWPreTrainedModel
from mmfw.hf.processing import MMFWImageProcessor, MMFWProcessor


def register() -> None:
    """Register the mmfw classes with transformers' Auto classes (idempotent; done on import)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    AutoConfig.register(MMFWConfig.model_type, MMFWConfig, exist_ok=True)
    AutoModelForImageTextToText.register(MMFWConfig, MMFWForConditionalGeneration, exist_ok=True)
    # one class for both backends: it runs mmfw's own image strategy, not transformers' PIL/torchvision kernels
    AutoImageProcessor.register(MMFWConfig, image_processor_classes={"pil": MMFWImageProcessor,
                                                                     "torchvision": MMFWImageProcessor},
                                exist_ok=True)
    AutoProcessor.register(MMFWConfig, MMFWProcessor, exist_ok=True)


register()

__all__ = ["MMFWConfig", "MMFWForConditionalGeneration", "MMFWImageProcessor", "MMFWPreTrainedModel",
           "MMFWProcessor", "register"]
