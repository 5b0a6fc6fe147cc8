"""The plugin module named by the ``mmfw.plugins`` entry point: registers the Gemma LLMs."""

from mmfw import hookimpl
from mmfw.components import Registries
from mmfw_gemma.llm import Gemma2LLM, Gemma3LLM, GemmaLLM


@hookimpl
def mmfw_register_components(registries: Registries) -> None:
    for llm in (GemmaLLM, Gemma2LLM, Gemma3LLM):
        registries.llms.register(llm)
