"""The vision-language model: composition of the components (:mod:`~mmfw.model.vlm`), the fusion of image features
into the token sequence (:mod:`~mmfw.model.fusion`), building from a config (:mod:`~mmfw.model.builder`), model
directories (:mod:`~mmfw.model.io`) and LoRA adapter files (:mod:`~mmfw.model.adapters`).
"""
