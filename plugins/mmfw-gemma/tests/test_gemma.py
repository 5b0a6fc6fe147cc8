"""The Gemma LLMs keep mmfw's contracts (through the kit), use Gemma's chat template, and train inside a VLM."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mmfw_gemma", reason="the mmfw-gemma plugin is not installed (pip install -e plugins/mmfw-gemma)")
import torch
from mmfw_gemma.llm import GEMMA_CHAT_TEMPLATE
from PIL import Image
from transformers import AutoTokenizer

from mmfw.config.experiment import ModelConfig
from mmfw.model.builder import build_model
from mmfw.testing import check_llm, installed_registries, missing_grads, tiny_tokenizer_dir

NAMES = ["gemma", "gemma2", "gemma3"]


@pytest.fixture(scope="module")
def registries():
    return installed_registries()


@pytest.fixture(scope="module")
def bare_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kit's tiny tokenizer without a chat template of its own (as a tokenizer trained from scratch may be)."""
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir())
    tok.chat_template = None
    out = tmp_path_factory.mktemp("bare-tokenizer")
    tok.save_pretrained(out)
    assert not AutoTokenizer.from_pretrained(out).chat_template
    return out


@pytest.mark.parametrize("name", NAMES)
def test_keeps_every_contract(name: str) -> None:
    checked = check_llm(name)
    assert {"chat-template", "forward-backward", "kept-logits", "vlm-gradients", "meta-build", "export"} <= set(checked)


@pytest.mark.parametrize("name", NAMES)
def test_registered_from_this_package(registries, name: str) -> None:
    assert registries.llms.entry(name).source.startswith("mmfw-gemma:gemma (mmfw_gemma.llm.")


def test_default_chat_template_folds_the_system_prompt_into_the_first_turn(registries, bare_tokenizer_dir) -> None:
    cfg = registries.llms.config_class("gemma").example(tokenizer=str(bare_tokenizer_dir))
    tok = registries.llms.get("gemma").load_tokenizer(cfg)
    assert tok.chat_template == GEMMA_CHAT_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour?"},
                {"role": "assistant", "content": "red"}, {"role": "user", "content": "Shape?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|bos|><start_of_turn>user\nBe brief.\n\nColour?<end_of_turn>\n<start_of_turn>model\nred"
                    "<end_of_turn>\n<start_of_turn>user\nShape?<end_of_turn>\n<start_of_turn>model\n")
    no_system = tok.apply_chat_template(messages[1:2], tokenize=False)
    assert no_system == "<|bos|><start_of_turn>user\nColour?<end_of_turn>\n"


@pytest.mark.parametrize("name", NAMES)
def test_embedding_path_equals_token_path(registries, name: str) -> None:
    """Gemma scales embeddings by sqrt(hidden) inside the model: inputs_embeds (the VLM's path) gives the same
    logits as input_ids."""
    cfg = registries.llms.config_class(name).example(tokenizer=str(tiny_tokenizer_dir()))
    llm_cls = registries.llms.get(name)
    tok = llm_cls.load_tokenizer(cfg)
    torch.manual_seed(0)
    llm = registries.llms.build(cfg, tokenizer=tok).eval()
    ids = torch.tensor([tok.encode("a red square on the left of two circles", add_special_tokens=False)])
    assert ids.shape[1] > 8  # longer than the sliding window of the examples
    with torch.no_grad():
        from_ids = llm(input_ids=ids).logits
        from_embeds = llm(inputs_embeds=llm.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(from_embeds, from_ids)
    scale = llm.model.model.embed_tokens.embed_scale if hasattr(llm.model.model.embed_tokens, "embed_scale") else None
    if scale is not None:
        assert float(scale) == pytest.approx(llm.hidden_size ** 0.5)


def test_gemma3_rope_theta_sets_the_global_layers_only(registries) -> None:
    cfg = registries.llms.config_class("gemma3").example(tokenizer=str(tiny_tokenizer_dir()))
    arch = cfg.architecture.model_copy(update={"rope_theta": 123456.0})
    hf = registries.llms.get("gemma3").architecture_config(arch, vocab_size=300)
    assert hf.rope_parameters["full_attention"]["rope_theta"] == 123456.0
    assert hf.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0
    assert hf.layer_types == ["sliding_attention", "full_attention"] and hf.sliding_window == 8


@pytest.mark.parametrize("name", ["gemma", "gemma3"])
def test_a_vlm_with_gemma_learns_an_image_caption(registries, name: str) -> None:
    """CLIP + MLP + Gemma: the loss on a fixed image/caption pair falls over a few steps, and every parameter of
    the whole model gets a gradient."""
    tokdir = str(tiny_tokenizer_dir())
    cfg = ModelConfig(vision_encoder=registries.vision_encoders.config_class("clip").example(),
                      connector=registries.connectors.config_class("mlp").example(),
                      llm=registries.llms.config_class(name).example(tokenizer=tokdir),
                      image_strategy=registries.image_strategies.config_class("resize").example())
    torch.manual_seed(0)
    vlm, tok = build_model(cfg, registries)
    image = vlm.image_strategy.preprocess(Image.new("RGB", (40, 30), "red"))
    n = vlm.image_strategy.num_tokens(image.size)
    ids = torch.tensor([[vlm.image_token_id] * n + tok.encode(" a red square", add_special_tokens=False)])
    labels = ids.clone()
    labels[:, :n] = -100
    inputs = dict(input_ids=ids, labels=labels, pixel_values=image.pixel_values,
                  image_sizes=torch.tensor([image.size]), num_tiles=torch.tensor([1]))
    opt = torch.optim.AdamW(vlm.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        opt.zero_grad()
        loss = vlm(**inputs).loss
        loss.backward()
        if step == 0:
            assert missing_grads(vlm.named_parameters()) == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
