"""mmfw parameter names -> ``LlavaForConditionalGeneration`` names, for comparing gradients one tensor at a time."""

from __future__ import annotations

RULES = (
    ("vision_encoder.model.", "model.vision_tower."),
    ("connector.net.0.", "model.multi_modal_projector.linear_1."),
    ("connector.net.2.", "model.multi_modal_projector.linear_2."),
    ("llm.model.model.", "model.language_model."),
    ("llm.model.lm_head.", "lm_head."),
    ("image_strategy.image_newline", "model.image_newline"),
)


def to_hf(key: str) -> str:
    for src, dst in RULES:
        if key.startswith(src):
            return dst + key[len(src):]
    raise KeyError(f"no transformers name for mmfw parameter {key}")
