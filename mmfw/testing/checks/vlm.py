"""Whole-model contracts, for a component of any kind composed with partners (:data:`~mmfw.testing.core.BASE_COMBO`
by default) into a VLM: image tokens agree with the image strategy, a mixed batch trains every parameter, a text-only
batch works and still reaches the vision path, generation returns new tokens, the model builds on the meta device,
and the component's transformers export mapping (when it declares one) fits transformers' model."""

from __future__ import annotations

from typing import Any

import torch

from mmfw.config.experiment import ModelConfig
from mmfw.data.batch import VLMBatch
from mmfw.model.builder import build_model
from mmfw.testing.checks.image_strategies import SIZES, random_image
from mmfw.testing.core import KINDS, SLOTS, ComponentUnderTest, contract, listing, missing_grads


def model_config(cut: ComponentUnderTest) -> ModelConfig:
    """The component in its slot, partners in the others; an LLM as wide as the encoder for a connector that keeps
    the width (e.g. identity)."""
    cfgs = {SLOTS[kind]: cut.partner_config(kind) for kind in KINDS}
    if cut.kind != "llms":
        reg = cut.registries
        enc_dim = cut.run("building the vision encoder", lambda: reg.vision_encoders.build(
            cfgs["vision_encoder"]).embed_dim, "the partner encoder must build")
        geometry = reg.llms.get(cfgs["llm"].type).geometry(cfgs["llm"])
        if geometry is not None:
            try:
                reg.connectors.build(cfgs["connector"], in_dim=enc_dim, out_dim=geometry.hidden_size)
            except ValueError:  # a connector that keeps the width (identity): an LLM as wide as the encoder
                cfgs["llm"] = cfgs["llm"].with_hidden_size(enc_dim) or cfgs["llm"]
    return ModelConfig(**cfgs)


def model(cut: ComponentUnderTest) -> tuple[Any, Any]:
    """The whole model and tokenizer (built once per component under test), gradients cleared, training mode."""
    def make() -> tuple[Any, Any]:
        cfg = model_config(cut)
        torch.manual_seed(0)
        return cut.run("building the whole model", lambda: build_model(cfg, cut.registries),
                       "the component must compose with the others (mmfw.model.builder.build_model)")
    vlm, tok = cut.cached("vlm", make)
    vlm.zero_grad(set_to_none=True)
    vlm.train()
    return vlm, tok


def image_batch(vlm, tok, size: tuple[int, int] = (45, 30)) -> tuple[VLMBatch, int]:
    """A two-row batch: one image sample (its ``<image>`` expanded to ``num_tokens``) and one text-only sample."""
    image = vlm.image_strategy.preprocess(random_image(size))
    n = vlm.image_strategy.num_tokens(image.size)
    row_a = (tok.encode("look:", add_special_tokens=False) + [vlm.image_token_id] * n
             + tok.encode(" a red square", add_special_tokens=False))
    row_b = tok.encode("no image in this sample at all", add_special_tokens=False)
    length = max(len(row_a), len(row_b))
    ids = torch.tensor([r + [tok.pad_token_id] * (length - len(r)) for r in (row_a, row_b)])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in (row_a, row_b)])
    return VLMBatch(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100),
                    pixel_values=image.pixel_values, image_sizes=torch.tensor([image.size]),
                    num_tiles=torch.tensor([image.pixel_values.shape[0]]), image_counts=torch.tensor([1, 0])), n


@contract(KINDS, "image-tokens")
def image_tokens(cut: ComponentUnderTest) -> None:
    """An image becomes exactly ``image_strategy.num_tokens(size)`` rows of the LLM's width (what the data pipeline
    expands ``<image>`` to), for square, non-square and extreme sizes."""
    vlm, _ = model(cut)
    strategy = vlm.image_strategy
    for size in SIZES:
        image = cut.run("preprocess", lambda size=size: strategy.preprocess(random_image(size)),
                        "preprocess must accept any RGB image")
        n = strategy.num_tokens(image.size)
        px = image.pixel_values
        feats = cut.run(f"encoding a {size[0]}x{size[1]} image", lambda px=px, image=image: vlm.encode_images(
            px, torch.tensor([image.size]), torch.tensor([px.shape[0]])),
            "encoder, connector and strategy must agree on the tile grid")
        cut.require(tuple(feats.shape) == (n, vlm.llm.hidden_size),
                    f"a {size[0]}x{size[1]} image gave {tuple(feats.shape)} feature rows but "
                    f"image_strategy.num_tokens({size}) says {n} (LLM width {vlm.llm.hidden_size})",
                    "num_tokens must count what the encoder, connector.num_tokens and merge produce")


@contract(KINDS, "vlm-gradients")
def vlm_gradients(cut: ComponentUnderTest) -> None:
    """A batch mixing an image sample and a text-only sample gives a finite loss whose gradient reaches every
    trainable parameter of the whole model."""
    vlm, tok = model(cut)
    batch, _ = image_batch(vlm, tok)
    out = cut.run("the model's forward", lambda: vlm(**batch.model_inputs(labels=True)), "the component must work inside the whole model")
    cut.require(torch.isfinite(out.loss), f"loss {out.loss}", "the loss of the whole model must be finite")
    out.loss.backward()
    missing = missing_grads(vlm.named_parameters())
    cut.require(not missing, f"trainable parameters {listing(missing)} received no gradient in the whole model",
                "every trainable parameter must take part in forward (DDP and FSDP reject the others)")


@contract(KINDS, "text-only")
def text_only(cut: ComponentUnderTest) -> None:
    """A batch without images trains, and the vision path still gets (zero) gradients (the blank-image term)."""
    vlm, tok = model(cut)
    ids = torch.tensor([tok.encode("only text here", add_special_tokens=False)])
    out = cut.run("forward of a text-only batch", lambda: vlm(input_ids=ids, labels=ids),
                  "a batch without images must work")
    cut.require(torch.isfinite(out.loss), f"text-only loss {out.loss}", "the loss must be finite")
    out.loss.backward()
    vision = [*vlm.vision_encoder.named_parameters(prefix="vision_encoder"),
              *vlm.connector.named_parameters(prefix="connector"),
              *vlm.image_strategy.named_parameters(prefix="image_strategy")]
    missing = missing_grads(vision)
    cut.require(not missing, f"vision-path parameters {listing(missing)} got no gradient from a text-only batch",
                "the encoder, connector and strategy must run on the blank tile of their native size")


@contract(KINDS, "vlm-generate")
def vlm_generate(cut: ComponentUnderTest) -> None:
    """Greedy generation with an image returns only the new tokens."""
    vlm, tok = model(cut)
    batch, _ = image_batch(vlm, tok)
    vlm.eval()
    new = cut.run("generate", lambda: vlm.generate(
        batch.input_ids[:1], batch.attention_mask[:1], batch.pixel_values, batch.image_sizes, batch.num_tiles,
        batch.image_counts[:1], max_new_tokens=2, min_new_tokens=2, do_sample=False), "generation must work")
    cut.require(tuple(new.shape) == (1, 2), f"generate returned shape {tuple(new.shape)} for 2 new tokens",
                "return only the new tokens")


@contract(KINDS, "meta-build")
def meta_build(cut: ComponentUnderTest) -> None:
    """The whole model builds on the meta device (``mmfw inspect`` and config validation do) with the same
    parameter names and shapes as the real one."""
    vlm, tok = model(cut)
    cfg = model_config(cut)
    with torch.device("meta"):
        meta, _ = cut.run("build_model on the meta device", lambda: build_model(cfg, cut.registries, tokenizer=tok),
                          "construction must not need real tensors (no .item(), no data-dependent shapes, no "
                          "loads when no weights are asked for)")
    real = {n: tuple(p.shape) for n, p in vlm.named_parameters()}
    shapes = {n: tuple(p.shape) for n, p in meta.named_parameters()}
    differ = sorted(n for n in real.keys() | shapes.keys() if real.get(n) != shapes.get(n))
    cut.require(not differ, f"parameters {listing(differ)} differ between the meta and the real build",
                "construction must not depend on the device")
    on_meta = [n for n, p in meta.named_parameters() if p.device.type != "meta"]
    cut.require(not on_meta, f"parameters {listing(on_meta)} were allocated off the meta device",
                "create parameters on the default device (no explicit device=)")


@contract(KINDS, "export")
def export(cut: ComponentUnderTest) -> None:
    """When the component declares ``hf_llava_export``, the whole model exports: the parts name transformers'
    config keys, the weights fit transformers' Llava model, and the export reloaded by transformers gives the mmfw
    model's logits (no declaration, or an ``ExportError`` for settings without a counterpart: nothing to check)."""
    vlm, tok = model(cut)
    module = getattr(vlm, SLOTS[cut.kind])
    hook = getattr(module, "hf_llava_export", None)
    if hook is None:
        cut.not_applicable("it declares no transformers mapping (no hf_llava_export)")
    from mmfw.export.hf_llava import FORMATS, ExportError, HFLlavaPart, build_hf_llava, collect_parts

    try:
        part = hook()
    except ExportError as e:
        cut.not_applicable(f"its settings have no transformers counterpart: {e}")
    except Exception as e:
        cut.fail(f"hf_llava_export raised {type(e).__name__}: {e}",
                 "return an HFLlavaPart, or raise ExportError when the settings have no counterpart")
    if part is None:
        cut.not_applicable("its hf_llava_export returns None (no transformers mapping)")
    cut.require(isinstance(part, HFLlavaPart), f"hf_llava_export returned a {type(part).__name__}",
                "return an HFLlavaPart (mmfw.export.hf_llava), or None when there is no mapping")
    try:
        parts = collect_parts(vlm)
    except ExportError as e:
        cut.not_applicable(f"a partner has no transformers mapping: {e}")
    allowed = [f for f in FORMATS if all(f in p.formats for p in parts.values())]
    if not allowed:
        cut.not_applicable("its partners export to other formats")
    try:
        exported = build_hf_llava(vlm, tok, allowed[0])
    except ExportError as e:
        cut.fail(f"the {allowed[0]} export does not fit transformers: {e}",
                 "name every weight and config key as transformers' Llava model does, with its shapes")
    theirs, ours = exported_logits(cut, vlm, tok, exported)
    worst = float((theirs - ours).abs().max())
    cut.require(worst <= 1e-3, f"the {exported.format} export, reloaded by transformers, gives logits up to {worst:.3g} "
                "away from the mmfw model's on the same image and text",
                "the mapping must reproduce the component: same weights under transformers' names, the same feature "
                "layer and token selection, the same config values")


def exported_logits(cut: ComponentUnderTest, vlm, tok, exported) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the export reloaded with transformers' Auto class and of the mmfw model, for one image sample."""
    import tempfile

    from transformers import AutoModelForImageTextToText

    batch, _ = image_batch(vlm, tok)
    ids, mask, px = batch.input_ids[:1], batch.attention_mask[:1], batch.pixel_values
    with tempfile.TemporaryDirectory(prefix="mmfw-testing-export-") as out:
        exported.save(out)
        hf = cut.run("reloading the export", lambda: AutoModelForImageTextToText.from_pretrained(out).eval(),
                     "the saved config must load with transformers' Auto classes")
    hf_inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": px}
    if exported.format == "hf-llava-next":  # (images, tiles, 3, H, W) and (height, width) per image
        width, height = batch.image_sizes[0].tolist()
        hf_inputs |= {"pixel_values": px.unsqueeze(0), "image_sizes": torch.tensor([[height, width]])}
    vlm.eval()
    with torch.no_grad():
        ours = vlm(input_ids=ids, attention_mask=mask, pixel_values=px, image_sizes=batch.image_sizes,
                   num_tiles=batch.num_tiles, image_counts=batch.image_counts[:1]).logits
        theirs = cut.run("the reloaded export's forward", lambda: hf(**hf_inputs).logits,
                         "the exported model must run on the same inputs")
    return theirs.float(), ours.float()
