"""Tests for the LLaVA dataset and the batch collator (mmfw.data.dataset, mmfw.data.collator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmfw.config.base import ImageStrategyConfig
from mmfw.config.experiment import DatasetSpec
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import EncodingCache, LlavaDataset
from mmfw.data.errors import RecordError
from mmfw.data.report import SkippedSample
from mmfw.data.tokenize import IGNORE_INDEX, EncodedSample
from mmfw.data.tokenizer_train import train_tokenizer
from mmfw.encoders.base import VisionSpec
from mmfw.image_strategies.base import ImageInput, ImageStrategy, VisionGeometry
from mmfw.image_strategies.resize import ResizeStrategy, ResizeStrategyConfig

SPEC = VisionSpec(image_size=(16, 16), patch_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), embed_dim=8)
GEOMETRY = VisionGeometry(SPEC, connector_tokens=lambda g: g[0] * g[1], connector_grid=lambda g: g)


class TileStrategy(ImageStrategy):
    """Test strategy: landscape images become 2 tiles, others 1; every tile is filled with the image's red value
    (0..1) so that the order of tiles in a batch can be read back; 3 tokens per tile."""

    def preprocess(self, image: Image.Image) -> ImageInput:
        tiles = self.tiles(image.size)
        red = image.convert("RGB").getpixel((0, 0))[0] / 255.0
        return ImageInput(pixel_values=torch.full((tiles, 3, 8, 8), red), size=image.size)

    @staticmethod
    def tiles(size: tuple[int, int]) -> int:
        return 2 if size[0] > size[1] else 1

    def num_tokens(self, size: tuple[int, int]) -> int:
        return 3 * self.tiles(size)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = ["What color is the shape? red green blue", "How many shapes? 2 3", "Compare the two images. left right"]
    return train_tokenizer(corpus * 4, tmp_path_factory.mktemp("tok"), vocab_size=300)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    (d / "images").mkdir()
    # red value encodes identity: 10, 20, 30, 40; sizes: a landscape (2 tiles) and portrait/square (1 tile)
    for name, red, size in [("a", 10, (24, 12)), ("b", 20, (12, 12)), ("c", 30, (12, 20)), ("d", 40, (30, 10))]:
        Image.new("RGB", size, (red, 0, 0)).save(d / "images" / f"{name}.png")
    Image.new("L", (12, 12), 50).save(d / "images" / "gray.png")
    records = [
        {"id": "one", "image": "images/a.png",
         "conversations": [{"from": "human", "value": "<image>\nWhat color is the shape?"},
                           {"from": "gpt", "value": "red"}]},
        {"id": "text", "conversations": [{"from": "human", "value": "How many shapes?"}, {"from": "gpt", "value": "2"},
                                         {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "3"}]},
        {"id": "bad", "conversations": [{"from": "gpt", "value": "oops"}]},
        {"id": "two", "images": ["images/b.png", "images/c.png"],
         "conversations": [{"from": "human", "value": "Compare the two images."}, {"from": "gpt", "value": "left"}]},
        {"id": "gray", "image": "images/gray.png",
         "conversations": [{"from": "human", "value": "What color? <image>"}, {"from": "gpt", "value": "green"}]},
    ]
    (d / "train.json").write_text(json.dumps(records), encoding="utf-8")
    # a JSONL file elsewhere, images resolved through image_root
    (d / "other").mkdir()
    lines = [json.dumps({"id": "j1", "image": "d.png", "conversations": [
        {"role": "user", "content": "<image> What color?"}, {"role": "assistant", "content": "blue"}]}), "{broken"]
    (d / "other" / "more.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def dataset(tokenizer, data_dir) -> LlavaDataset:
    specs = [DatasetSpec(path=str(data_dir / "train.json")),
             DatasetSpec(path=str(data_dir / "other" / "more.jsonl"), image_root=str(data_dir / "images"))]
    return LlavaDataset(specs, tokenizer, TileStrategy(ImageStrategyConfig(type="tiles"), GEOMETRY, 8),
                        image_token="<image>", max_length=512, system_prompt="Answer briefly.")


def supervised(tokenizer, item) -> list[str]:
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    out, cur = [], []
    for t, lab in zip([*ids, 0], [*labels, IGNORE_INDEX], strict=True):
        if lab != IGNORE_INDEX:
            cur.append(t)
        elif cur:
            out.append(tokenizer.decode(cur, skip_special_tokens=False))
            cur = []
    return out


def test_dataset_loads_and_skips_bad_records(dataset, data_dir):
    assert len(dataset) == 5
    assert [dataset.conversation(i).id for i in range(5)] == ["one", "text", "two", "gray", "j1"]
    assert [(Path(s.location).name, s.id, s.reason) for s in dataset.skipped] == [
        ("train.json[2]", "bad", "starts-with-assistant"), ("more.jsonl:2", None, "bad-json")]
    assert dataset.image_paths(2) == [data_dir / "images" / "b.png", data_dir / "images" / "c.png"]
    assert dataset.image_paths(4) == [data_dir / "images" / "d.png"]
    assert dataset.image_paths(1) == []


def test_getitem_expands_images_and_masks_labels(dataset, tokenizer):
    tid = tokenizer.convert_tokens_to_ids("<image>")
    expected_tokens = {"one": 6, "text": 0, "two": 3 + 3, "gray": 3, "j1": 6}
    for i in range(len(dataset)):
        item = dataset[i]
        assert set(item) == {"id", "input_ids", "labels", "images", "num_tokens", "truncated"}
        assert item["num_tokens"] == len(item["input_ids"]) and item["truncated"] is None
        ids, labels = item["input_ids"], item["labels"]
        assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape and ids.dim() == 1
        assert int((ids == tid).sum()) == expected_tokens[item["id"]]
        assert bool((labels[ids == tid] == IGNORE_INDEX).all())
        assert sum(dataset.strategy.num_tokens(im.size) for im in item["images"]) == expected_tokens[item["id"]]
        assert supervised(tokenizer, item) == [a + "<|im_end|>" for a in dataset.answers(i)]
        text = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
        assert text.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n")
    gray = dataset[3]["images"][0]
    assert gray.size == (12, 12) and gray.pixel_values.shape == (1, 3, 8, 8)
    assert gray.pixel_values[0, 0, 0, 0].item() == pytest.approx(50 / 255)  # "L" image converted to RGB


def test_answers_and_prompt_messages(dataset):
    assert dataset.answers(1) == ["2", "3"]
    assert dataset.prompt_messages(1) == [
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "How many shapes?"},
        {"role": "assistant", "content": "2"}, {"role": "user", "content": "Sure?"}]
    # the missing placeholder was added for "two" (two images, none in the text)
    assert dataset.prompt_messages(2)[1]["content"] == "<image>\n<image>\nCompare the two images."


def test_prompt_item_matches_training_prefix(dataset):
    item, prompt = dataset[1], dataset.prompt_item(1)
    n = len(prompt["input_ids"])
    assert torch.equal(item["input_ids"][:n], prompt["input_ids"])
    assert item["labels"][n].item() != IGNORE_INDEX  # the last reply starts right after the prompt
    assert prompt["answer"] == "3" and bool((prompt["labels"] == IGNORE_INDEX).all())


def test_truncation_policies(tokenizer, data_dir):
    strategy = TileStrategy(ImageStrategyConfig(type="tiles"), GEOMETRY, 8)
    spec = [DatasetSpec(path=str(data_dir / "train.json"))]

    def make(max_length, truncation):
        return LlavaDataset(spec, tokenizer, strategy, image_token="<image>", max_length=max_length,
                            truncation=truncation)

    full = make(512, "drop-turns")[0]
    tid = tokenizer.convert_tokens_to_ids("<image>")
    last_image = int((full["input_ids"] == tid).nonzero().max())
    n = len(full["input_ids"])
    # cut-text: a cut after the image keeps it; the cut sample is a prefix of the full one
    item = make(n - 2, "cut-text")[0]
    assert len(item["input_ids"]) == n - 2 and len(item["images"]) == 1
    assert torch.equal(item["input_ids"], full["input_ids"][:n - 2])
    assert torch.equal(item["labels"], full["labels"][:n - 2])
    assert item["truncated"].policy == "cut-text" and item["num_tokens"] == n
    assert supervised(tokenizer, item) == ["red"]  # <|im_end|> and the newline are cut
    # a cut inside the image moves before it, which leaves nothing supervised: skipped, never split
    skipped = make(last_image, "cut-text")[0]
    assert isinstance(skipped, SkippedSample) and skipped.reason == "no-supervised-tokens"
    assert skipped.id == "one" and skipped.location.endswith("train.json[0]")
    # drop-sample and drop-turns cannot shorten a one-turn sample
    for policy in ("drop-sample", "drop-turns"):
        s = make(last_image + 2, policy)[0]
        assert isinstance(s, SkippedSample) and s.reason == "too-long" and s.num_tokens == n
    # drop-turns keeps the first of two turns of the text-only sample
    two_turns = make(512, "drop-turns")[1]
    first = two_turns["labels"].tolist().index(-100, int((two_turns["labels"] != -100).nonzero()[0]))
    short = make(first + 3, "drop-turns")[1]
    assert supervised(tokenizer, short) == ["2<|im_end|>"]
    assert short["truncated"].policy == "drop-turns"


def test_on_error_raise(tokenizer, data_dir, tmp_path):
    strategy = TileStrategy(ImageStrategyConfig(type="tiles"), GEOMETRY, 8)
    # a record that fails validation stops the construction
    with pytest.raises(RecordError, match=r"train.json\[2\]: record 'bad': the first turn") as info:
        LlavaDataset([DatasetSpec(path=str(data_dir / "train.json"))], tokenizer, strategy, image_token="<image>",
                     max_length=512, on_error="raise")
    assert info.value.reason_code == "starts-with-assistant"
    # a sample that fails when loaded stops the iteration
    records = json.loads((data_dir / "train.json").read_text())
    (tmp_path / "ok.json").write_text(json.dumps([records[0], records[3]]), encoding="utf-8")
    strict = LlavaDataset([DatasetSpec(path=str(tmp_path / "ok.json"), image_root=str(data_dir))], tokenizer,
                          strategy, image_token="<image>", max_length=20, truncation="drop-sample", on_error="raise")
    with pytest.raises(RecordError, match=r"ok.json\[0\]: sample 'one' has 40 tokens > data.max_length 20") as info:
        strict[0]
    assert info.value.reason_code == "too-long"


def test_resize_strategy_and_missing_image(tokenizer, data_dir, tmp_path):
    strategy = ResizeStrategy(ResizeStrategyConfig(), GEOMETRY, 8)
    recs = [{"id": "r", "image": "a.png", "conversations": [{"from": "human", "value": "<image>Q"},
                                                           {"from": "gpt", "value": "A"}]},
            {"id": "missing", "image": "nope.png", "conversations": [{"from": "human", "value": "Q"},
                                                                    {"from": "gpt", "value": "A"}]}]
    (tmp_path / "d.json").write_text(json.dumps(recs), encoding="utf-8")
    ds = LlavaDataset([DatasetSpec(path=str(tmp_path / "d.json"), image_root=str(data_dir / "images"))], tokenizer,
                      strategy, image_token="<image>", max_length=256)
    item = ds[0]
    assert item["images"][0].pixel_values.shape == (1, 3, 16, 16) and item["images"][0].size == (24, 12)
    assert int((item["input_ids"] == tokenizer.convert_tokens_to_ids("<image>")).sum()) == 4  # (16/8)**2
    skipped = ds[1]
    assert isinstance(skipped, SkippedSample) and skipped.reason == "missing-image" and skipped.index == 1
    assert "record 'missing'" in skipped.message and "nope.png" in skipped.message


def test_dataset_requires_single_image_token(tokenizer, data_dir):
    with pytest.raises(ValueError, match="not a single token"):
        LlavaDataset([DatasetSpec(path=str(data_dir / "train.json"))], tokenizer,
                     TileStrategy(ImageStrategyConfig(type="tiles"), GEOMETRY, 8), image_token="<img>", max_length=64)


# --- collator ------------------------------------------------------------------------------------------------------


def test_collator_right_padding(dataset, tokenizer):
    items = [dataset[i] for i in (0, 1, 2)]
    batch = VLMCollator(pad_token_id=tokenizer.pad_token_id)(items)
    lengths = [len(it["input_ids"]) for it in items]
    B, S = 3, max(lengths)
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape == (B, S)
    for b, (it, n) in enumerate(zip(items, lengths, strict=True)):
        assert torch.equal(batch.input_ids[b, :n], it["input_ids"])
        assert torch.equal(batch.labels[b, :n], it["labels"])
        assert bool((batch.input_ids[b, n:] == tokenizer.pad_token_id).all())
        assert bool((batch.labels[b, n:] == IGNORE_INDEX).all())
        assert batch.attention_mask[b].tolist() == [1] * n + [0] * (S - n)
    # images: a (landscape, 2 tiles), b (1), c (1): tiles concatenated in sample then image order
    assert batch.pixel_values.shape == (4, 3, 8, 8)
    assert [round(v * 255) for v in batch.pixel_values[:, 0, 0, 0].tolist()] == [10, 10, 20, 30]
    assert batch.image_sizes.tolist() == [[24, 12], [12, 12], [12, 20]]
    assert batch.num_tiles.tolist() == [2, 1, 1]
    assert batch.image_counts.tolist() == [1, 0, 2]
    assert all(getattr(batch, k).dtype == torch.long for k in ("input_ids", "labels", "attention_mask", "image_sizes",
                                                      "num_tiles", "image_counts"))


def test_collator_left_padding(dataset, tokenizer):
    items = [dataset[i] for i in (4, 1)]
    batch = VLMCollator(pad_token_id=tokenizer.pad_token_id, padding_side="left")(items)
    S = batch.input_ids.shape[1]
    for b, it in enumerate(items):
        n = len(it["input_ids"])
        assert torch.equal(batch.input_ids[b, S - n:], it["input_ids"])
        assert torch.equal(batch.labels[b, S - n:], it["labels"])
        assert bool((batch.input_ids[b, :S - n] == tokenizer.pad_token_id).all())
        assert bool((batch.labels[b, :S - n] == IGNORE_INDEX).all())
        assert batch.attention_mask[b].tolist() == [0] * (S - n) + [1] * n
    assert [round(v * 255) for v in batch.pixel_values[:, 0, 0, 0].tolist()] == [40, 40]
    assert batch.image_counts.tolist() == [1, 0]


def test_collator_prompts_for_generation(dataset, tokenizer):
    prompts = [dataset.prompt_item(i) for i in range(len(dataset))]
    batch = VLMCollator(pad_token_id=tokenizer.pad_token_id, padding_side="left")(prompts)
    # every row ends with the generation prompt "<|im_start|>assistant\n"
    tail = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert all(row[-len(tail):] == tail for row in batch.input_ids.tolist())
    assert bool((batch.attention_mask[:, -1] == 1).all())
    assert batch.image_counts.tolist() == [1, 0, 2, 1, 1]


def test_collator_text_only_batch(dataset, tokenizer):
    batch = VLMCollator(pad_token_id=tokenizer.pad_token_id)([dataset[1], dataset[1]])
    assert batch.pixel_values is None
    assert batch.image_sizes.shape == (0, 2) and batch.num_tiles.shape == (0,)
    assert batch.image_counts.tolist() == [0, 0]
    assert bool((batch.attention_mask == 1).all())


def test_collator_rejects_mixed_tile_shapes():
    def item(h: int) -> dict:
        return {"input_ids": torch.tensor([1, 2]), "labels": torch.tensor([IGNORE_INDEX, 2]),
                "images": [ImageInput(torch.zeros(1, 3, h, h), (h, h))]}

    with pytest.raises(ValueError, match="share one shape"):
        VLMCollator(pad_token_id=0)([item(8), item(16)])
    with pytest.raises(ValueError, match="padding_side"):
        VLMCollator(pad_token_id=0, padding_side="middle")  # type: ignore[arg-type]


def test_dataloader_end_to_end(dataset, tokenizer):
    loader = DataLoader(dataset, batch_size=2, shuffle=False, collate_fn=VLMCollator(tokenizer.pad_token_id))
    batches = list(loader)
    assert [b.input_ids.shape[0] for b in batches] == [2, 2, 1]
    total_images = sum(int(b.image_counts.sum()) for b in batches)
    assert total_images == 5
    tid = tokenizer.convert_tokens_to_ids("<image>")
    for b in batches:
        # image tokens in the batch == what the strategy says for the batch's images
        expected = sum(dataset.strategy.num_tokens(tuple(s)) for s in b.image_sizes.tolist())
        assert int((b.input_ids == tid).sum()) == expected
        assert int(b.num_tiles.sum()) == (0 if b.pixel_values is None else b.pixel_values.shape[0])


def test_repeated_conversations_are_tokenized_once(tokenizer, data_dir, tmp_path, monkeypatch):
    """The same messages with the same image token counts come from the cache; other counts are encoded anew."""
    turns = [{"from": "human", "value": "<image>\nWhat color is the shape?"}, {"from": "gpt", "value": "red"}]
    records = [{"id": f"r{k}", "image": str(data_dir / "images" / img), "conversations": turns}
               for k, img in enumerate(["b.png", "c.png", "a.png", "b.png"])]  # a.png is landscape: 2 tiles
    (tmp_path / "rep.json").write_text(json.dumps(records), encoding="utf-8")
    ds = LlavaDataset([DatasetSpec(path=str(tmp_path / "rep.json"))], tokenizer,
                      TileStrategy(ImageStrategyConfig(type="tiles"), GEOMETRY, 8), image_token="<image>",
                      max_length=512)
    from mmfw.data import sample as dataset_module

    calls = []
    encode = dataset_module.encode_conversation
    monkeypatch.setattr(dataset_module, "encode_conversation", lambda *a, **k: calls.append(k) or encode(*a, **k))
    items = [ds[i] for i in range(4)]
    assert [list(c["image_token_counts"]) for c in calls] == [[3], [6]]
    assert ds._encodings.hits == 2 and len(ds._encodings) == 2
    for item in items:
        fresh = encode(ds.conversation(0).messages, tokenizer, image_token="<image>",
                       image_token_counts=[ds.strategy.num_tokens(item["images"][0].size)])
        assert item["input_ids"].tolist() == fresh.input_ids and item["labels"].tolist() == fresh.labels
    assert len(items[2]["input_ids"]) == len(items[0]["input_ids"]) + 3


def test_encoding_cache_is_lru_bounded_by_tokens_and_returns_copies():
    cache = EncodingCache(max_tokens=10)
    a, b, c = (EncodedSample([t] * 4, [IGNORE_INDEX, t, t, t], image_spans=[(0, 1)], turn_ends=[4]) for t in (1, 2, 3))
    cache.put("a", a)
    cache.put("b", b)
    got = cache.get("a")  # a is now the most recently used
    assert got == a and got is not a
    got.input_ids.append(9)
    got.image_spans.append((5, 6))
    assert cache.get("a") == a  # what a caller does with its copy does not reach the cache
    cache.put("c", c)  # 12 tokens > 10: the least recently used entry (b) goes
    assert cache.get("b") is None and cache.get("a") == a and cache.get("c") == c
    assert cache.tokens == 8 and len(cache) == 2
    cache.put("big", EncodedSample([1] * 11, [1] * 11))  # larger than the whole budget: not stored
    assert cache.get("big") is None and len(cache) == 2
