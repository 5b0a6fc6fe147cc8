"""What every component answers, whatever its kind: the questions code outside a component asks it.

:class:`ComponentContract` is a base of each kind's contract (``VisionEncoder``, ``Connector``, ``LanguageModel``,
``ImageStrategy``), so the rest of mmfw asks a component instead of probing its attributes: the transformers model it
wraps (LoRA adapters wrap it), its blocks (partial unfreezing, FSDP wrapping), its export mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from mmfw.interop import HFLlavaPart

__all__ = ["ComponentContract"]


class ComponentContract:
    """Defaults of the questions every component answers; a component overrides what applies to it."""

    lora_task_type: ClassVar[str | None] = None
    """peft's ``task_type`` for adapters on this component (``"CAUSAL_LM"`` for LLMs)."""

    def inner_model(self) -> nn.Module | None:
        """The transformers model this component wraps (what LoRA adapters wrap, and whose own gradient-checkpointing
        switch is used), or ``None``."""
        return None

    def replace_inner_model(self, module: nn.Module) -> None:
        """Put ``module`` (the inner model wrapped by peft, or merged back) in place of :meth:`inner_model`."""
        raise TypeError(f"{type(self).__name__} wraps no transformers model")

    def layer_groups(self) -> list[nn.Module]:
        """The component's repeated blocks in order (for "unfreeze the last N blocks" and checkpointing); empty when
        it has none."""
        return []

    def fsdp_block_classes(self) -> set[type[nn.Module]]:
        """Module classes FSDP wraps one unit each (the transformer blocks): the classes of :meth:`layer_groups`."""
        return {type(block) for block in self.layer_groups()}

    def hf_llava_export(self) -> HFLlavaPart | None:
        """This component's share of a transformers Llava / LlavaNext checkpoint, or ``None`` when it has no
        counterpart. Raise :class:`mmfw.errors.ExportError` for settings that have none."""
        return None
