"""Language models: a transformers causal LM that takes ``inputs_embeds``, with its tokenizer and chat template.

The contract is :class:`mmfw.llms.base.LanguageModel` (tokenizer, geometry, generation, the model LoRA wraps);
:class:`~mmfw.llms.base.HFCausalLM` is the shared transformers wrapper, and each family (``llama``, ``mistral``,
``qwen2``, ``qwen3``) is a short file naming its transformers classes and default chat template.
"""
