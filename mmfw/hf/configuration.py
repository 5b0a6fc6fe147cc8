"""``MMFWConfig``: the transformers config of an exported mmfw model (``model_type: "mmfw"``).

It holds mmfw's resolved model config (``mmfw_model``, the ``model:`` section of a run's ``config.yaml``, with every
component built from its architecture so that no weights are downloaded), the run's system prompt and the image
placeholder. :class:`~mmfw.hf.modeling.MMFWForConditionalGeneration` rebuilds the mmfw model from it.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class MMFWConfig(PretrainedConfig):
    """transformers config of an exported mmfw vision-language model."""

    model_type = "mmfw"

    mmfw_model: dict[str, Any] | None = None
    """mmfw's model config (``vision_encoder``, ``connector``, ``llm``, ``image_strategy``, ``fusion``)."""
    text_config: dict[str, Any] | PretrainedConfig | None = None
    """The LLM's transformers config (for tools that ask a multimodal config for its text part)."""
    system_prompt: str | None = None
    """The run's ``data.system_prompt``, put in front of every conversation by the processor's chat template."""
    image_token: str = "<image>"
    image_token_id: int = -1
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.text_config, dict):
            from transformers import AutoConfig

            text = dict(self.text_config)
            self.text_config = AutoConfig.for_model(text.pop("model_type"), **text)
        super().__post_init__(**kwargs)

    def get_text_config(self, *args: Any, **kwargs: Any) -> PretrainedConfig:
        return self.text_config if self.text_config is not None else self

    def model_config(self, registries: Any = None) -> Any:
        """``mmfw_model`` parsed into mmfw's :class:`~mmfw.config.ModelConfig` (through the registries)."""
        from mmfw.components import default_registries
        from mmfw.config import load_config_dict

        if self.mmfw_model is None:
            raise ValueError("this MMFWConfig has no mmfw_model (write it with `mmfw export RUN OUT --format hf`)")
        registries = registries or default_registries()
        exp = load_config_dict({"model": self.mmfw_model, "training": {"max_steps": 1}}, registries,
                               source="config.json: mmfw_model")
        return exp.model
