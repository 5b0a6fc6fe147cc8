"""The built-in plugin: registers mmfw's own components through the same hook a third-party plugin uses."""

from __future__ import annotations

from mmfw import hookimpl
from mmfw.components import Registries


@hookimpl
def mmfw_register_components(registries: Registries) -> None:
    from mmfw.connectors.mlp import MLPConnector
    from mmfw.encoders.clip import CLIPVisionEncoder
    from mmfw.image_strategies.pad import PadStrategy
    from mmfw.image_strategies.resize import ResizeStrategy
    from mmfw.llms.llama import LlamaLLM

    for cls in (CLIPVisionEncoder,):
        registries.vision_encoders.register(cls)
    for cls in (MLPConnector,):
        registries.connectors.register(cls)
    for cls in (LlamaLLM,):
        registries.llms.register(cls)
    for cls in (ResizeStrategy, PadStrategy):
        registries.image_strategies.register(cls)
