"""Full-model contract: every component, composed with the others into a VLM, trains on a mixed batch.

For each combination from :func:`contract_utils.vlm_combos` (each registered component at least once): the image
becomes exactly ``strategy.num_tokens(size)`` feature rows (the count the data pipeline expands ``<image>`` to), a
batch mixing an image sample and a text-only sample gives a finite loss whose gradient reaches every trainable
parameter, a text-only batch still reaches the vision path, and generation returns only new tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from contract_utils import example_config, missing_grads
from PIL import Image

from mmfw.components import Registries
from mmfw.config.experiment import ModelConfig
from mmfw.model.builder import build_model

IMAGE_SIZE = (45, 30)  # (width, height): not square, not the encoder's native size


def model_config(registries: Registries, combo: tuple[str, str, str, str], tokenizer_dir: Path) -> ModelConfig:
    enc, conn, llm, strat = combo
    enc_cfg = example_config(registries, "vision_encoders", enc)
    conn_cfg = example_config(registries, "connectors", conn)
    llm_cfg = example_config(registries, "llms", llm, tokenizer_dir)
    enc_dim = registries.vision_encoders.build(enc_cfg).embed_dim
    try:
        registries.connectors.build(conn_cfg, in_dim=enc_dim, out_dim=llm_cfg.architecture.hidden_size)
    except ValueError:  # e.g. identity: the LLM must be as wide as the encoder
        arch = llm_cfg.architecture.model_copy(update={"hidden_size": enc_dim, "intermediate_size": 2 * enc_dim})
        llm_cfg = llm_cfg.model_copy(update={"architecture": arch})
    return ModelConfig(vision_encoder=enc_cfg, connector=conn_cfg, llm=llm_cfg,
                       image_strategy=example_config(registries, "image_strategies", strat))


@pytest.fixture(scope="module")
def built(registries: Registries, vlm_combo: tuple[str, str, str, str], tokenizer_dir: Path):
    torch.manual_seed(0)
    return build_model(model_config(registries, vlm_combo, tokenizer_dir), registries)


@pytest.fixture
def vlm(built):
    """The combination's model (built once per module), gradients cleared, in training mode."""
    model, tok = built
    model.zero_grad(set_to_none=True)
    model.train()
    return model, tok


def random_image(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def mixed_batch(model, tok) -> tuple[dict[str, torch.Tensor], int]:
    image = model.image_strategy.preprocess(random_image(IMAGE_SIZE))
    n = model.image_strategy.num_tokens(image.size)
    row_a = (tok.encode("look:", add_special_tokens=False) + [model.image_token_id] * n
             + tok.encode(" a red square", add_special_tokens=False))
    row_b = tok.encode("no image in this sample at all", add_special_tokens=False)
    length = max(len(row_a), len(row_b))
    rows = [r + [tok.pad_token_id] * (length - len(r)) for r in (row_a, row_b)]
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in (row_a, row_b)])
    ids = torch.tensor(rows)
    return dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100),
                pixel_values=image.pixel_values, image_sizes=torch.tensor([image.size]),
                num_tiles=torch.tensor([image.pixel_values.shape[0]])), n


def test_image_rows_equal_strategy_num_tokens(vlm) -> None:
    model, tok = vlm
    batch, n = mixed_batch(model, tok)
    feats = model.encode_images(batch["pixel_values"], batch["image_sizes"], batch["num_tiles"])
    assert feats.shape == (n, model.llm.hidden_size)


def test_mixed_batch_backprops_to_every_trainable_parameter(vlm) -> None:
    model, tok = vlm
    batch, _ = mixed_batch(model, tok)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert missing_grads(model.named_parameters()) == []


def test_text_only_batch_reaches_the_vision_path(vlm) -> None:
    model, tok = vlm
    ids = torch.tensor([tok.encode("only text here", add_special_tokens=False)])
    model(input_ids=ids, labels=ids).loss.backward()
    vision = [*model.vision_encoder.named_parameters(), *model.connector.named_parameters()]
    assert missing_grads(vision) == []


def test_generate_returns_new_tokens(vlm) -> None:
    model, tok = vlm
    batch, _ = mixed_batch(model, tok)
    model.eval()
    new = model.generate(batch["input_ids"][:1], batch["attention_mask"][:1], batch["pixel_values"],
                         batch["image_sizes"], batch["num_tiles"], max_new_tokens=2, min_new_tokens=2,
                         do_sample=False)
    assert new.shape == (1, 2)
