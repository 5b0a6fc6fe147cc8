"""Image start/end tokens (``model.fusion.image_start_token`` / ``image_end_token``): config, tokenizer, data
pipeline, token counts, label masks, the fusion's located checks, export refusal."""

from __future__ import annotations

import copy

import pytest
import torch

from mmfw.config import load_config_dict
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import build_dataset
from mmfw.data.tokenize import IGNORE_INDEX, encode_conversation
from mmfw.data.truncation import truncate
from mmfw.export.hf_llava import ExportError, build_hf_llava
from mmfw.inspection import inspect_config
from mmfw.model.builder import build_model
from mmfw.model.fusion import FusionError, check_image_markers

MARKERS = {"image_start_token": "<im_start>", "image_end_token": "<im_end>"}


@pytest.fixture
def marked(tiny_experiment, registries):
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["fusion"] = dict(MARKERS)
    cfg = load_config_dict(exp, registries)
    torch.manual_seed(0)
    model, tok = build_model(cfg.model, registries)
    ds = build_dataset(cfg.data.train, cfg.data, tok, model.image_strategy, image_token=cfg.model.fusion.image_token,
                       image_markers=cfg.model.fusion.image_markers)
    return cfg, model, tok, ds


@pytest.mark.parametrize("fusion, message", [
    ({"image_start_token": "<im_start>"}, "set both image_start_token and image_end_token"),
    ({"image_start_token": "<image>", "image_end_token": "<im_end>"}, "three different"),
    ({"image_start_token": "<a>", "image_end_token": "<b>", "typo": 1}, "typo"),
])
def test_fusion_config_errors(tiny_experiment, registries, fusion, message) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["fusion"] = fusion
    with pytest.raises(Exception, match=message):
        load_config_dict(exp, registries)


def test_tokens_are_special_and_have_embedding_rows(marked) -> None:
    cfg, model, tok, _ = marked
    start, end = model.image_marker_ids
    assert tok.convert_ids_to_tokens([start, end]) == ["<im_start>", "<im_end>"]
    assert tok("a<im_start>b", add_special_tokens=False)["input_ids"].count(start) == 1
    assert {start, end, model.image_token_id} == set(model.added_token_ids)
    # (a pretrained LLM grows by mean-initialised rows: tests/llms/test_special_tokens.py)
    assert model.llm.get_input_embeddings().weight.shape[0] == len(tok)


def test_each_image_is_wrapped_and_unsupervised(marked) -> None:
    cfg, model, tok, ds = marked
    item = ds[0]
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    start, end = model.image_marker_ids
    img = model.image_token_id
    n = model.image_strategy.num_tokens(item["images"][0].size)
    p = ids.index(start)
    assert ids[p:p + n + 2] == [start] + [img] * n + [end]
    assert all(labels[q] == IGNORE_INDEX for q in range(p, p + n + 2))
    enc = ds.encode_full(0, item["images"])
    (s, e), = enc.image_spans
    assert (s, e) == (p, p + n + 2)
    # the single source of truth: the strategy's rows plus the markers
    assert e - s == cfg.model.fusion.image_sequence_length(n) == n + 2


def test_truncation_never_separates_an_image_from_its_markers(marked) -> None:
    _, model, tok, _ = marked
    msgs = [{"role": "user", "content": "what shape"}, {"role": "assistant", "content": "red"},
            {"role": "user", "content": "<image> and here"}, {"role": "assistant", "content": "blue"}]
    enc = encode_conversation(msgs, tok, image_token="<image>", image_token_counts=[4],
                              image_markers=("<im_start>", "<im_end>"))
    (s, e), = enc.image_spans
    assert e - s == 6 and enc.input_ids[s] == model.image_marker_ids[0] and enc.input_ids[e - 1] == model.image_marker_ids[1]
    for cut in range(s + 1, e):  # every cut inside [start, image rows, end] drops the whole image
        out = truncate(enc, cut, "cut-text", "x").sample
        assert len(out) == s and out.image_spans == []


def test_inspect_counts_the_markers(tiny_experiment, marked, registries) -> None:
    cfg, model, _, _ = marked
    plain = inspect_config(load_config_dict(tiny_experiment, registries), registries)
    with_markers = inspect_config(cfg, registries)
    assert with_markers["image_tokens"] == plain["image_tokens"] + 2
    assert with_markers["image_tokens_max"] == plain["image_tokens_max"] + 2


def test_model_trains_on_marked_batches_and_masks_marker_labels(marked) -> None:
    _, model, tok, ds = marked
    batch = VLMCollator(tok.pad_token_id)([ds[0], ds[1]])
    labels = batch.labels.clone()
    start, end = model.image_marker_ids
    labels[batch.input_ids == start] = start  # even if the data forgot to mask them, the fusion does
    _, out_labels = model.embed(batch.input_ids, labels, batch.pixel_values, batch.image_sizes,
                                batch.num_tiles)
    assert bool((out_labels[batch.input_ids == start] == IGNORE_INDEX).all())
    loss = model(**batch.model_inputs(labels=True)).loss
    assert torch.isfinite(loss)


def _swap_end(ids: torch.Tensor, row: int, end: int) -> torch.Tensor:
    bad = ids.clone()
    p = int((bad[row] == end).nonzero()[0])
    bad[row, p], bad[row, p + 1] = bad[row, p + 1].clone(), end
    return bad


def test_misplaced_end_token_is_a_located_error(marked) -> None:
    _, model, tok, ds = marked
    batch = VLMCollator(tok.pad_token_id)([ds[0], ds[1]])
    start, end = model.image_marker_ids
    bad = _swap_end(batch.input_ids, 1, end)
    n = model.image_strategy.num_tokens(ds[1]["images"][0].size)
    p = int((bad[1] == start).nonzero()[0])
    with pytest.raises(FusionError, match=rf"sample 1, image 0 \(start token at position {p}\): the image end token "
                                          rf"must come right after its {n} feature rows, at position {p + 1 + n}"):
        model(**{**batch.model_inputs(), "input_ids": bad})


def test_marker_checks_name_sample_and_image() -> None:
    img, s, e = 9, 7, 8
    ids = torch.tensor([[1, s, img, img, e, 2, s, img, e, 0],
                        [1, 2, s, img, img, e, 3, 0, 0, 0]])
    check_image_markers(ids, img, s, e, [2, 1, 2])
    with pytest.raises(FusionError, match=r"sample 0, image 1 \(start token at position 6\): the "
                                          r"image end token at position 8 comes after 1 placeholder\(s\), but the "
                                          r"image has 2 feature rows"):
        check_image_markers(ids, img, s, e, [2, 2, 2])  # image 1 of sample 0 has one row but two features
    unpaired = ids.clone()
    unpaired[1, 5] = 3
    with pytest.raises(FusionError, match=r"do not pair up \(sample 1: 1 start, 0 end\)"):
        check_image_markers(unpaired, img, s, e, [2, 1, 2])
    text_inside = ids.clone()
    text_inside[1, 4] = 3
    with pytest.raises(FusionError, match=r"sample 1, image 0 .*position 4 holds token 3"):
        check_image_markers(text_inside, img, s, e, [2, 1, 2])
    with pytest.raises(FusionError, match="3 image start tokens in the batch .* but 2 images"):
        check_image_markers(ids, img, s, e, [2, 1])


def test_markers_in_the_data_stay_text(marked) -> None:
    """A start/end token typed in the data is text, not a marker: only the ones mmfw writes around the image are."""
    _, _, tok, _ = marked
    msgs = [{"role": "user", "content": "<image> look <im_end>"}, {"role": "assistant", "content": "red"}]
    enc = encode_conversation(msgs, tok, image_token="<image>", image_token_counts=[3],
                              image_markers=("<im_start>", "<im_end>"))
    ids = list(enc["input_ids"] if isinstance(enc, dict) else enc.input_ids)
    start, end = tok.convert_tokens_to_ids("<im_start>"), tok.convert_tokens_to_ids("<im_end>")
    assert ids.count(start) == 1 and ids.count(end) == 1


def test_export_refuses_markers_with_a_reason(marked) -> None:
    _, model, tok, _ = marked
    with pytest.raises(ExportError, match="cannot write start/end tokens around each image"):
        build_hf_llava(model, tok)
