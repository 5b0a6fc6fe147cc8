"""Property tests: collator + fusion over random batches equal a plain per-sample reference.

Random batches vary the number of images per sample (none included), each image's token count, text lengths, the
padding side and skipped samples. The reference builds every sample's embedding sequence on its own, token by token,
then pads it; the vectorised path (``VLMCollator`` then ``splice_image_features``) must give exactly the same
embeddings, labels and attention mask. Fixed, derandomized examples keep CI stable.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfw.data.collator import VLMCollator
from mmfw.data.report import SkippedSample
from mmfw.image_strategies.base import ImageInput
from mmfw.model.fusion import IGNORE_INDEX, FusionError, splice_image_features

IMG, PAD, VOCAB, DIM = 7, 0, 20, 5
TEXT_IDS = [t for t in range(VOCAB) if t != IMG]


@st.composite
def samples(draw) -> dict:
    """One sample: ids/labels with image runs, plus that sample's own feature rows per image."""
    ids: list[int] = []
    labels: list[int] = []
    images: list[ImageInput] = []
    features: list[torch.Tensor] = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()) and len(images) < 3:
            n = draw(st.integers(1, 4))
            ids += [IMG] * n
            labels += [draw(st.sampled_from([IGNORE_INDEX, IMG]))] * n  # fusion must mask image positions anyway
            tiles = draw(st.integers(1, 2))
            images.append(ImageInput(torch.full((tiles, 3, 2, 2), float(len(images))), size=(n, tiles)))
            features.append(torch.randn(n, DIM, generator=torch.Generator().manual_seed(draw(st.integers(0, 999)))))
        else:
            for _ in range(draw(st.integers(0, 4))):
                t = draw(st.sampled_from(TEXT_IDS))
                ids.append(t)
                labels.append(draw(st.sampled_from([IGNORE_INDEX, t])))
    if not ids:
        ids, labels = [1], [1]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "images": images, "features": features}


def reference(kept: list[dict], table: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample: embed token by token (image positions take that sample's next feature row), then pad."""
    length = max(len(s["input_ids"]) for s in kept)
    embeds, labels, masks = [], [], []
    for s in kept:
        rows = iter(torch.cat(s["features"]) if s["features"] else [])
        e = [next(rows) if t == IMG else table[t] for t in s["input_ids"].tolist()]
        lab = [IGNORE_INDEX if t == IMG else int(x) for t, x in zip(s["input_ids"].tolist(), s["labels"].tolist(),
                                                                  strict=True)]
        pad = length - len(e)
        pe, pl, pm = [table[PAD]] * pad, [IGNORE_INDEX] * pad, [0] * pad
        e, lab, m = (e + pe, lab + pl, [1] * len(lab) + pm) if side == "right" else (pe + e, pl + lab, pm + [1] * len(lab))
        embeds.append(torch.stack(e))
        labels.append(torch.tensor(lab))
        masks.append(torch.tensor(m))
    return torch.stack(embeds), torch.stack(labels), torch.stack(masks)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(batch=st.lists(samples(), min_size=1, max_size=4), side=st.sampled_from(["right", "left"]),
       skipped=st.lists(st.booleans(), min_size=4, max_size=4))
def test_collator_and_fusion_equal_per_sample_reference(batch: list[dict], side: str, skipped: list[bool]) -> None:
    items: list = []
    for b, s in enumerate(batch):
        if skipped[b] and b > 0:  # keep at least the first sample
            items.append(SkippedSample(f"f.jsonl:{b}", f"s{b}", "missing-image", "gone", index=b))
        items.append(s)
    kept = [s for s in items if not isinstance(s, SkippedSample)]
    out = VLMCollator(PAD, padding_side=side)(items)
    assert [s.id for s in out.skipped] == [s.id for s in items if isinstance(s, SkippedSample)]

    table = torch.randn(VOCAB, DIM, generator=torch.Generator().manual_seed(0))
    features = torch.cat([f for s in kept for f in s["features"]]) if any(s["features"] for s in kept) \
        else torch.zeros(0, DIM)
    rows = [sum(len(f) for f in s["features"]) for s in kept]
    fused, labels = splice_image_features(table[out.input_ids], out.input_ids, IMG, features, out.labels,
                                          rows_per_sample=rows)
    ref_embeds, ref_labels, ref_mask = reference(kept, table, side)
    assert torch.equal(fused, ref_embeds)
    assert torch.equal(labels, ref_labels)
    assert torch.equal(out.attention_mask, ref_mask)
    # image bookkeeping: per image its size and tiles, per sample its image count, tiles in order
    images = [im for s in kept for im in s["images"]]
    assert out.image_counts.tolist() == [len(s["images"]) for s in kept]
    assert out.num_tiles.tolist() == [im.pixel_values.shape[0] for im in images]
    assert out.image_sizes.tolist() == [list(im.size) for im in images]
    if images:
        assert torch.equal(out.pixel_values, torch.cat([im.pixel_values for im in images]))
    else:
        assert out.pixel_values is None


def test_all_skipped_batch_is_empty() -> None:
    skip = SkippedSample("f.jsonl:1", "a", "corrupt-image", "bad")
    out = VLMCollator(PAD)([skip, skip])
    assert out.input_ids.shape == (2 - 2, 0) and out.skipped == [skip, skip] and out.pixel_values is None


def test_per_sample_mismatch_is_caught_even_when_the_batch_total_matches() -> None:
    ids = torch.tensor([[IMG, IMG, IMG, 1], [IMG, 1, 1, 1]])  # 3 + 1 placeholders
    embeds = torch.zeros(2, 4, DIM)
    feats = torch.ones(4, DIM)
    with pytest.raises(FusionError, match=r"sample 0: 3 placeholder tokens, 2 feature rows; sample 1: 1 placeholder"):
        splice_image_features(embeds, ids, IMG, feats, rows_per_sample=[2, 2])
    with pytest.raises(FusionError, match=r"4 image placeholder tokens in the batch \(per sample: \[3, 1\]\) but 5"):
        splice_image_features(embeds, ids, IMG, torch.ones(5, DIM))
    with pytest.raises(FusionError, match="labels"):
        splice_image_features(embeds, ids, IMG, feats, labels=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(FusionError, match="width"):
        splice_image_features(embeds, ids, IMG, torch.ones(4, DIM + 1))
