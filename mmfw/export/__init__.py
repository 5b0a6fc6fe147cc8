"""Export trained mmfw models to transformers: mmfw's own classes for any composition (``hf``, see
:mod:`mmfw.export.hf_native`) or transformers' native Llava / LlavaNext (:mod:`mmfw.export.hf_llava`)."""

from mmfw.export.hf_llava import FORMATS, ExportError, HFLlavaExport, HFLlavaPart, build_hf_llava, export_hf_llava
from mmfw.export.hf_native import ExportTargetExistsError, export

__all__ = ["FORMATS", "ExportError", "ExportTargetExistsError", "HFLlavaExport", "HFLlavaPart", "build_hf_llava",
           "export", "export_hf_llava"]
