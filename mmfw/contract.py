"""What every component answers, whatever its kind: the questions code outside a component asks it.

:class:`ComponentContract` is a base of each kind's contract (``VisionEncoder``, ``Connector``, ``LanguageModel``,
``ImageStrategy``), so the rest of mmfw asks a component instead of probing its attributes: the transformers model it
wraps (LoRA adapters wrap it), its blocks (partial unfreezing, FSDP wrapping), its export mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from mmfw.config.base import ComponentConfig
    from mmfw.interop import HFLlavaPart

__all__ = ["ComponentContract", "hf_gradient_checkpointing"]


class ComponentContract:
    """Defaults of the questions every component answers; a component overrides what applies to it."""

    cfg: ComponentConfig
    """The config the component was built from (set by each kind's base ``__init__``)."""
    lora_task_type: ClassVar[str | None] = None
    """peft's ``task_type`` for adapters on this component (``"CAUSAL_LM"`` for LLMs)."""

    def inner_model(self) -> nn.Module | None:
        """The transformers model this component wraps (what LoRA adapters wrap, and whose own gradient-checkpointing
        switch is used), or ``None``."""
        return None

    def init_non_persistent_buffers(self) -> None:
        """Recompute the buffers that the state dict does not hold (rotary tables, fixed biases) after the module was
        materialised from the meta device and loaded (transformers' ``from_pretrained``); nothing by default."""

    def replace_inner_model(self, module: nn.Module) -> None:
        """Put ``module`` (the inner model wrapped by peft, or merged back) in place of :meth:`inner_model`."""
        raise TypeError(f"{type(self).__name__} wraps no transformers model")

    def enable_gradient_checkpointing(self) -> bool:
        """Switch on the inner model's own gradient checkpointing (transformers'); ``False`` when it has none (then
        mmfw checkpoints each of :meth:`layer_groups`)."""
        return hf_gradient_checkpointing(self.inner_model())

    def layer_groups(self) -> list[nn.Module]:
        """The component's repeated blocks in order (for "unfreeze the last N blocks" and checkpointing); empty when
        it has none."""
        return []

    def fsdp_block_classes(self) -> set[type[nn.Module]]:
        """Module classes FSDP wraps one unit each (the transformer blocks): the classes of :meth:`layer_groups`."""
        return {type(block) for block in self.layer_groups()}

    def export_config(self) -> ComponentConfig:
        """A config that builds this component again without loading weights (``mmfw export --format hf`` stores
        it; the weights come from the export). The default is the component's own config; a component built from a
        checkpoint returns its architecture when it can."""
        return self.cfg

    def hf_llava_export(self) -> HFLlavaPart | None:
        """This component's share of a transformers Llava / LlavaNext checkpoint, or ``None`` when it has no
        counterpart. Raise :class:`mmfw.errors.ExportError` for settings that have none."""
        return None


def hf_gradient_checkpointing(model: nn.Module | None) -> bool:
    """Switch on transformers' own (non-reentrant) gradient checkpointing of ``model``; ``False`` when ``model`` is
    not a transformers model that supports it."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or not model.supports_gradient_checkpointing:
        return False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True
