"""mmfw plugin: the Gemma family of LLMs (``gemma``, ``gemma2``, ``gemma3``)."""
