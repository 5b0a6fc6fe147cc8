"""The LLM contract, and :class:`HFCausalLM`, the shared wrapper of transformers causal LMs.

An LLM component owns the transformers model and knows how to load its tokenizer (with a chat template: the
tokenizer's own, the config's override, or the family default). A model is either loaded with ``from_pretrained``
(local directory or hub id) or initialised at random from an architecture config, so the same YAML scales from a
laptop test to a 7B checkpoint. Their configs, :class:`HFCausalLMConfig` and :class:`CausalLMArchitecture`, are in
:mod:`mmfw.llms.config` (re-exported here).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from mmfw.config.base import LLMConfig
from mmfw.config.input_checks import load_located
from mmfw.contract import ComponentContract
from mmfw.errors import ConfigError, ExportError, TokenizerRequiredError
from mmfw.interop import HFLlavaPart
from mmfw.llms.attention import register_varlen_attention
from mmfw.llms.config import CausalLMArchitecture, HFCausalLMConfig
from mmfw.specs import LLMGeometry, torch_dtype

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["CausalLMArchitecture", "HFCausalLM", "HFCausalLMConfig", "LanguageModel", "resize_embeddings_mean"]


class LanguageModel(ComponentContract, nn.Module):
    """Base of LLM components: wraps a causal LM that accepts ``inputs_embeds``.

    ``forward`` takes transformers' causal-LM keywords; training passes ``logits_to_keep`` as a 1-D tensor of
    sequence positions (the logits of only those positions are computed, see :mod:`mmfw.training.loss`).
    """

    registry_name: str
    config_class: type[LLMConfig]
    model: PreTrainedModel
    lora_task_type: ClassVar[str | None] = "CAUSAL_LM"

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        """The output head (``lm_head``), or None; it may share its weight with the input embeddings."""
        return self.model.get_output_embeddings()

    @classmethod
    def config_problems(cls, cfg: LLMConfig) -> list[str]:
        """Problems with ``cfg`` that only this component knows (``"model.llm.KEY: message"`` lines), found without
        building anything; checked by ``mmfw data check`` and before training."""
        return []

    def forward(self, **kwargs: Any) -> Any:
        return self.model(**kwargs)

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """transformers' ``generate`` (``inputs_embeds``, ``attention_mask``, generation settings); with
        ``inputs_embeds`` it returns only the new token ids."""
        return self.model.generate(**kwargs)

    def inner_model(self) -> nn.Module:
        return self.model

    def replace_inner_model(self, module: nn.Module) -> None:
        self.model = module

    def fsdp_block_classes(self) -> set[type[nn.Module]]:
        """The decoder-layer classes transformers keeps whole (``_no_split_modules``)."""
        names = set(getattr(self.model, "_no_split_modules", None) or ())
        return {type(m) for m in self.model.modules() if type(m).__name__ in names}

    @classmethod
    def load_tokenizer(cls, cfg: LLMConfig) -> PreTrainedTokenizerBase:
        """The tokenizer of the LLM configured by ``cfg``, with a chat template and a pad token."""
        raise NotImplementedError(f"{cls.__name__} does not implement load_tokenizer(cfg)")

    @classmethod
    def geometry(cls, cfg: LLMConfig) -> LLMGeometry | None:
        """Hidden size and maximum sequence length of the LLM ``cfg`` describes, without building it (``None`` when
        that needs weights or files that are not available offline)."""
        return None


class HFCausalLM(LanguageModel):
    """A transformers causal LM: subclasses name the config class and, optionally, a default chat template."""

    hf_config_class: ClassVar[type[PretrainedConfig]]
    hf_model_class: ClassVar[type[PreTrainedModel]]
    default_chat_template: ClassVar[str | None] = None

    def __init__(self, cfg: HFCausalLMConfig, tokenizer: PreTrainedTokenizerBase | None) -> None:
        """``tokenizer=None`` builds a shape-only model (e.g. on the meta device for ``mmfw inspect``): the
        vocabulary is ``architecture.vocab_size`` and no special-token ids are set."""
        super().__init__()
        self.cfg = cfg
        dtype = torch_dtype(cfg.dtype)
        register_varlen_attention()
        if cfg.pretrained is not None:
            self.model = load_located(
                "model.llm.pretrained", cfg.pretrained, self.hf_model_class.from_pretrained, cfg.pretrained,
                dtype=dtype, attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code)
        else:
            if tokenizer is None and cfg.architecture.vocab_size is None:
                raise TokenizerRequiredError("the LLM's vocabulary comes from its tokenizer: building it without one "
                                             "needs llm.architecture.vocab_size")
            hf_cfg = self.architecture_config(cfg.architecture, vocab_size=0 if tokenizer is None else len(tokenizer))
            hf_cfg._attn_implementation = cfg.attn_implementation
            self.model = self.hf_model_class(hf_cfg).to(dtype)
        if tokenizer is not None:
            self._adopt_tokenizer(tokenizer)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def export_config(self) -> HFCausalLMConfig:
        """The architecture of the wrapped model (read from its transformers config when it was loaded pretrained),
        with the vocabulary size written out, so it rebuilds without its tokenizer or a download."""
        vocab = self.model.get_input_embeddings().weight.shape[0]
        if self.cfg.architecture is not None:
            arch = self.cfg.architecture.model_copy(update={"vocab_size": vocab})
        else:
            hf = self.model.config.to_dict()
            fields = set(CausalLMArchitecture.model_fields) - {"extra", "vocab_size", "rope_theta"}
            core = {k: hf[k] for k in fields if hf.get(k) is not None}
            known = set(self.hf_config_class().to_dict()) - {"architectures", "transformers_version", "model_type",
                                                             "_name_or_path", "dtype", "torch_dtype", "vocab_size"}
            extra = {k: v for k, v in hf.items() if k in known and k not in core}
            arch = CausalLMArchitecture(**core, vocab_size=vocab, extra=extra)
        return self.cfg.model_copy(update={"pretrained": None, "architecture": arch,
                                           "tokenizer": self.cfg.tokenizer or self.cfg.pretrained})

    def hf_llava_export(self) -> HFLlavaPart:
        """The language model of transformers' Llava / LlavaNext: this model's config and weights, renamed."""
        base = self.model.base_model_prefix + "."
        weights = {}
        for key, value in self.model.state_dict().items():
            if key.startswith(base):
                weights["model.language_model." + key[len(base):]] = value
            elif key.startswith("lm_head."):
                weights[key] = value
            else:
                raise ExportError(f"no Llava name for LLM parameter {key!r}")
        return HFLlavaPart(config={"text_config": self.model.config.to_dict()}, weights=weights)

    def _adopt_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Special-token ids from the tokenizer; embeddings grown to its length (new rows = mean)."""
        self.model.config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            self.model.config.eos_token_id = tokenizer.eos_token_id
            if self.model.generation_config is not None:
                self.model.generation_config.eos_token_id = tokenizer.eos_token_id
                self.model.generation_config.pad_token_id = tokenizer.pad_token_id
        resize_embeddings_mean(self.model, len(tokenizer))

    @classmethod
    def config_problems(cls, cfg: HFCausalLMConfig) -> list[str]:
        if cfg.architecture is None:
            return []
        unknown = sorted(set(cfg.architecture.extra) - set(cls.hf_config_class().to_dict()))
        return [f"model.llm.architecture.extra: {cls.hf_config_class.__name__} has no field(s) {unknown}"] if unknown \
            else []

    @classmethod
    def architecture_config(cls, arch: CausalLMArchitecture, vocab_size: int) -> PretrainedConfig:
        """The transformers config for an architecture; unknown ``extra`` keys are errors."""
        known = set(cls.hf_config_class().to_dict())
        unknown = sorted(set(arch.extra) - known)
        if unknown:
            raise ConfigError([f"model.llm.architecture.extra: {cls.hf_config_class.__name__} has no field(s) "
                               f"{unknown}"])
        kwargs = arch.model_dump(exclude={"extra", "vocab_size", "rope_theta"}, exclude_none=True)
        kwargs["vocab_size"] = arch.vocab_size or vocab_size
        if arch.rope_theta is not None:
            kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": arch.rope_theta}
        kwargs.update(arch.extra)
        return cls.hf_config_class(**kwargs)

    @classmethod
    def geometry(cls, cfg: HFCausalLMConfig) -> LLMGeometry | None:
        """From ``architecture``, or from the local config of ``pretrained`` (``None`` if it is not there)."""
        arch = cfg.architecture
        if arch is not None:
            return LLMGeometry(arch.hidden_size, arch.max_position_embeddings, "architecture.max_position_embeddings")
        try:
            from transformers import AutoConfig

            hf = AutoConfig.from_pretrained(cfg.pretrained, local_files_only=True,
                                            trust_remote_code=cfg.trust_remote_code)
        except Exception as e:  # not available offline: nothing to check against
            logger.debug("cannot read the LLM config of %r: %s", cfg.pretrained, e)
            return None
        hf = hf.get_text_config()
        return LLMGeometry(int(hf.hidden_size), getattr(hf, "max_position_embeddings", None),
                           f"pretrained ({cfg.pretrained}: max_position_embeddings)")

    @classmethod
    def load_tokenizer(cls, cfg: HFCausalLMConfig) -> PreTrainedTokenizerBase:
        """The tokenizer with a chat template and a pad token."""
        from transformers import AutoTokenizer

        source = cfg.tokenizer or cfg.pretrained
        where = "model.llm.tokenizer" if cfg.tokenizer else "model.llm.pretrained"
        tok = load_located(where, source, AutoTokenizer.from_pretrained, source,
                           trust_remote_code=cfg.trust_remote_code)
        if cfg.chat_template is not None:
            tok.chat_template = cfg.chat_template
        elif not getattr(tok, "chat_template", None):
            if cls.default_chat_template is None:
                raise ValueError(f"tokenizer {source!r} has no chat template and {cls.registry_name!r} has no "
                                 "default; set llm.chat_template")
            tok.chat_template = cls.default_chat_template
        if tok.pad_token is None:
            tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
        if cfg.extra_special_tokens:
            added = tok.add_tokens(list(cfg.extra_special_tokens), special_tokens=True)
            logger.info("added %d of %d extra special tokens to the tokenizer", added, len(cfg.extra_special_tokens))
        return tok


def resize_embeddings_mean(model: PreTrainedModel, num_tokens: int) -> None:
    """Grow input (and untied output) embeddings to ``num_tokens`` rows; new rows = mean of the old rows."""
    old = model.get_input_embeddings().weight.shape[0]
    if num_tokens <= old:
        return
    model.resize_token_embeddings(num_tokens, mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[old:] = emb[:old].mean(dim=0, keepdim=True)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[old:] = out.weight[:old].mean(dim=0, keepdim=True)
            if getattr(out, "bias", None) is not None:
                out.bias[old:] = 0
    logger.info("resized embeddings %d -> %d rows (new rows = mean of old)", old, num_tokens)
