"""The built-in plugin: registers mmfw's own components through the same hook a third-party plugin uses."""

from __future__ import annotations

from mmfw import hookimpl
from mmfw.config.kinds import Registries


@hookimpl
def mmfw_register_components(registries: Registries) -> None:
    from mmfw.connectors.identity import IdentityConnector
    from mmfw.connectors.linear import LinearConnector
    from mmfw.connectors.mlp import MLPConnector
    from mmfw.connectors.patch_merger import PatchMergerConnector
    from mmfw.connectors.resampler import ResamplerConnector
    from mmfw.encoders.clip import CLIPVisionEncoder
    from mmfw.encoders.eva02 import EVA02VisionEncoder
    from mmfw.encoders.open_clip import OpenCLIPVisionEncoder
    from mmfw.encoders.siglip import SiglipVisionEncoder
    from mmfw.executors.local import LocalExecutor
    from mmfw.executors.ray import RayExecutor
    from mmfw.executors.slurm import SlurmExecutor
    from mmfw.image_strategies.anyres import AnyresStrategy
    from mmfw.image_strategies.pad import PadStrategy
    from mmfw.image_strategies.resize import ResizeStrategy
    from mmfw.llms.llama import LlamaLLM
    from mmfw.llms.mistral import MistralLLM
    from mmfw.llms.qwen2 import Qwen2LLM
    from mmfw.llms.qwen3 import Qwen3LLM

    for cls in (CLIPVisionEncoder, SiglipVisionEncoder, EVA02VisionEncoder, OpenCLIPVisionEncoder):
        registries.vision_encoders.register(cls)
    for cls in (MLPConnector, LinearConnector, IdentityConnector, ResamplerConnector, PatchMergerConnector):
        registries.connectors.register(cls)
    for cls in (LlamaLLM, MistralLLM, Qwen2LLM, Qwen3LLM):
        registries.llms.register(cls)
    for cls in (ResizeStrategy, PadStrategy, AnyresStrategy):
        registries.image_strategies.register(cls)
    for cls in (LocalExecutor, SlurmExecutor, RayExecutor):
        registries.executors.register(cls)
