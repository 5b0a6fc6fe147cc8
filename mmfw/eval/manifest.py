"""The ``lmms_eval.models`` entry point of mmfw: ``lmms-eval --model mmfw --model_args pretrained=RUN_DIR``.

lmms-eval calls :func:`manifests` when it collects its models; the model class itself
(:class:`mmfw.eval.lmms_model.MMFWLmms`) is imported only when ``mmfw`` is the requested model.
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "mmfw"
MODEL_CLASS = "mmfw.eval.lmms_model.MMFWLmms"


def manifests() -> Any:
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS)
