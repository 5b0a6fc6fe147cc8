"""Export trained mmfw models to other ecosystems' native formats (transformers' Llava / LlavaNext)."""

from mmfw.export.hf_llava import FORMATS, ExportError, HFLlavaExport, HFLlavaPart, build_hf_llava, export_hf_llava

__all__ = ["FORMATS", "ExportError", "HFLlavaExport", "HFLlavaPart", "build_hf_llava", "export_hf_llava"]
