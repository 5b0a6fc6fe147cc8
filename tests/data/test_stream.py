"""Streamed datasets (mmfw.data.stream, mmfw.data.sources) and `mmfw data convert` (mmfw.data.convert)."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mmfw.config.experiment import DatasetSpec, StreamConfig
from mmfw.data.collator import VLMCollator
from mmfw.data.convert import convert_to_hf, convert_to_webdataset
from mmfw.data.dataset import LlavaDataset
from mmfw.data.errors import DataError
from mmfw.data.report import SkippedSample
from mmfw.data.sample import SampleBuilder
from mmfw.data.sources import open_source
from mmfw.data.stream import StreamingDataset
from mmfw.data.stream_loader import StreamLoader
from mmfw.data.tokenizer_train import train_tokenizer
from tests.data.test_dataset_collator import TileStrategy

N = 23


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = ["What color is the shape? red green blue", "How many shapes? 2 3 4 5", "a b c d e f"]
    return train_tokenizer(corpus * 4, tmp_path_factory.mktemp("tok"), vocab_size=300)


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("llava")
    (d / "images").mkdir()
    for k, size in enumerate([(24, 12), (12, 12), (12, 20)]):
        Image.new("RGB", size, (10 * (k + 1), 0, 0)).save(d / "images" / f"{k}.png")
    records = [{"id": f"r{i}", "image": f"images/{i % 3}.png",
                "conversations": [{"from": "human", "value": "<image>\nWhat color is the shape?" + " a" * (i % 5)},
                                  {"from": "gpt", "value": ["red", "green", "blue"][i % 3] + " b" * (i % 7)}]}
               for i in range(N)]
    (d / "train.json").write_text(json.dumps(records), encoding="utf-8")
    return d / "train.json"


@pytest.fixture(scope="module")
def shards(llava, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wds")
    index = convert_to_webdataset(llava, out, shard_size=5)
    assert index["records"] == N and list(index["shards"].values()) == [5, 5, 5, 5, 3] and not index["problems"]
    return out


def _builder(tokenizer) -> SampleBuilder:
    from mmfw.config.base import ImageStrategyConfig
    from tests.data.test_dataset_collator import GEOMETRY

    return SampleBuilder(tokenizer, TileStrategy(ImageStrategyConfig(type="tiles"), GEOMETRY, 8),
                         image_token="<image>", max_length=256)


def _stream(tokenizer, spec: DatasetSpec, *, buffer: int = 0, rank: int = 0, processes: int = 1, **kw):
    cfg = StreamConfig(shuffle_buffer=buffer, hf_shard_rows=4)
    return StreamingDataset([open_source(spec, "data.train[0]", cfg)], _builder(tokenizer), seed=3, cfg=cfg,
                            rank=rank, num_processes=processes, **{"batch_size": 1, **kw})


def _epoch_items(ds: StreamingDataset) -> dict[str, list[int]]:
    out = {}
    for batch in ds._stream(0, 0, 1):
        for item in batch:
            out[item["id"]] = item["input_ids"].tolist()
        if len(out) == N:
            return out
    raise AssertionError("unreachable")


@pytest.mark.parametrize("kind", ["webdataset", "hf", "webdataset-paths", "hf-embedded"])
def test_streams_read_the_samples_of_the_json_source(tokenizer, llava, shards, tmp_path, kind):
    reference = LlavaDataset([DatasetSpec(path=str(llava))], tokenizer, _builder(tokenizer).strategy,
                             image_token="<image>", max_length=256)
    expected = {reference[i]["id"]: reference[i]["input_ids"].tolist() for i in range(len(reference))}
    if kind == "hf":
        assert convert_to_hf(llava, tmp_path / "hf")["records"] == N
        spec = DatasetSpec(path=str(tmp_path / "hf"), format="hf", image_root=str(llava.parent))
    elif kind == "hf-embedded":  # an Image feature, renamed columns
        import datasets

        records = json.loads(llava.read_text())
        ds = datasets.Dataset.from_dict({"key": [r["id"] for r in records],
                                         "picture": [str(llava.parent / r["image"]) for r in records],
                                         "turns": [r["conversations"] for r in records]})
        ds.cast_column("picture", datasets.Image()).save_to_disk(str(tmp_path / "emb"))
        spec = DatasetSpec(path=str(tmp_path / "emb"), format="hf",
                           fields={"id": "key", "image": "picture", "conversations": "turns"})
    elif kind == "webdataset-paths":  # images stay beside the shards, the records point at them
        convert_to_webdataset(llava, tmp_path / "w", shard_size=7, embed_images=False)
        spec = DatasetSpec(path=str(tmp_path / "w"), image_root=str(llava.parent))
    else:
        spec = DatasetSpec(path=str(shards))
    assert spec.kind == kind.split("-")[0]
    assert _epoch_items(_stream(tokenizer, spec, buffer=4)) == expected


@pytest.mark.parametrize("rows", [4, 100])  # 6 shards for 4 streams; 1 shard shared by 4 streams
def test_two_ranks_by_two_workers_read_every_record_exactly_once(tokenizer, llava, tmp_path, rows):
    convert_to_hf(llava, tmp_path / "hf")
    spec = DatasetSpec(path=str(tmp_path / "hf"), format="hf", image_root=str(llava.parent))
    for epoch in (0, 1):
        seen = Counter()
        for rank in (0, 1):
            ds = _stream(tokenizer, spec, buffer=3, rank=rank, processes=2)
            ds.cfg = StreamConfig(shuffle_buffer=3, hf_shard_rows=rows)
            ds.sources = [open_source(spec, "x", ds.cfg)]
            ds._units = [(0, s) for s in ds.sources[0].shards()]
            for w in (0, 1):
                seen.update(r.index for r in ds.records(epoch, rank * 2 + w, 4))
        assert seen == Counter(range(N))


def test_dataloader_workers_take_turns_and_cover_the_epoch(tokenizer, shards):
    ds = _stream(tokenizer, DatasetSpec(path=str(shards)), buffer=2, batch_size=2)
    collate = VLMCollator(0)
    loader = StreamLoader(ds, collate, num_workers=2,
                          batches_per_epoch=100)
    seen: Counter = Counter()
    finished = set()
    for batch in loader:
        stream = (loader.consumed - 1) % 2  # the workers take turns
        epoch = loader.positions[stream][0]
        if epoch == 0:
            seen.update(batch.ids)
        else:
            finished.add(stream)
        if finished == {0, 1}:
            break
    assert seen == Counter(f"r{i}" for i in range(N))


def _take(loader: StreamLoader, n: int) -> list[list[int]]:
    out = []
    for batch in loader:
        out.append(batch.input_ids.flatten().tolist())
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("mode", ["plain", "length", "pack"])
def test_resume_continues_at_the_exact_next_batch(tokenizer, shards, tmp_path, mode):
    def loader():
        ds = _stream(tokenizer, DatasetSpec(path=str(shards)), buffer=3, batch_size=2, mode=mode, pack_capacity=64)
        return StreamLoader(ds, VLMCollator(0), num_workers=2, batches_per_epoch=5)

    full = loader()
    reference = _take(full, 5) + _take(full, 5) + _take(full, 4)  # crosses the streams' epoch ends
    first = loader()
    part = _take(first, 5) + _take(first, 2)
    first.save_position(tmp_path, 0)
    resumed = loader()
    resumed.load_position(tmp_path, 0)
    rest = _take(resumed, 3) + _take(resumed, 4)
    assert part + rest == reference


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_input_is_located(tokenizer, llava, shards, tmp_path):
    with pytest.raises(DataError, match=r"data.train\[0\].path: shard not found: .*missing.tar"):
        open_source(DatasetSpec(path=str(tmp_path / "missing.tar")), "data.train[0]", StreamConfig())
    convert_to_hf(llava, tmp_path / "hf")
    with pytest.raises(DataError, match=r"data.train\[0\].fields.image: column 'picture' is not in"):
        open_source(DatasetSpec(path=str(tmp_path / "hf"), format="hf", fields={"image": "picture"}),
                    "data.train[0]", StreamConfig())
    # a sample without its record, one with broken JSON: counted skips with shard:key
    _tar(tmp_path / "bad.tar", {"a.0.png": b"x", "b.json": b"{not json", "c.json": json.dumps(
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}).encode()})
    ds = _stream(tokenizer, DatasetSpec(path=str(tmp_path / "bad.tar")), batch_size=3)
    batch = next(iter(ds._stream(0, 0, 1)))
    skipped = {s.reason: s for s in batch if isinstance(s, SkippedSample)}
    assert set(skipped) == {"missing-member", "bad-json"}
    assert skipped["missing-member"].location == f"{tmp_path / 'bad.tar'}:a"
    assert [it["id"] for it in batch if isinstance(it, dict)] == ["c"]
    # a truncated tar: one line naming the shard
    data = (shards / "shard-000000.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:len(data) // 2 + 100])
    loader = StreamLoader(_stream(tokenizer, DatasetSpec(path=str(tmp_path / "cut.tar"))), VLMCollator(0),
                          num_workers=0, batches_per_epoch=50)
    with pytest.raises(DataError, match=r"cut.tar: unreadable tar after member"):
        _take(loader, 50)


def test_cli_convert_writes_shards(llava, tmp_path, capsys):
    from mmfw.cli.main import main

    assert main(["data", "convert", str(llava), "--out", str(tmp_path / "s"), "--shard-size", "10"]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["index.json", "shard-000000.tar",
                                                                  "shard-000001.tar", "shard-000002.tar"]
    assert f"{N} record(s) in 3 shard(s)" in capsys.readouterr().out


def test_config_rules_for_streamed_sources():
    from pydantic import ValidationError

    from mmfw.config.experiment import DataConfig

    assert DatasetSpec(path="shards/train-*.tar").kind == "webdataset"
    assert DatasetSpec(path="some/dir").kind == "hf" and DatasetSpec(path="a.jsonl").kind == "json"
    with pytest.raises(ValidationError, match="mixes JSON files with streamed datasets"):
        DataConfig(train=[{"path": "a.json"}, {"path": "b.tar"}])
    with pytest.raises(ValidationError, match=r"eval\[0\]: .* is a streamed dataset"):
        DataConfig(eval=[{"path": "b.tar"}])
    with pytest.raises(ValidationError, match="fields: only for format hf"):
        DatasetSpec(path="b.tar", fields={"id": "x"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DataConfig(stream={"buffer": 3})


def test_mmfw_train_names_a_missing_shard(tiny_experiment, tmp_path, capsys):
    import yaml

    from mmfw.cli.main import main

    tiny_experiment["data"]["train"] = [{"path": str(tmp_path / "shards" / "train-*.tar")}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_experiment), encoding="utf-8")
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "data.train[0].path: no shard matches" in err and "Traceback" not in err
    assert main(["data", "convert", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")]) == 2
    assert "none.json: dataset file not found" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["eval", "modality", "modality-stage"])
def test_mmfw_train_rejects_what_streams_cannot_do_in_one_line(tiny_experiment, shards, tmp_path, capsys, case):
    import yaml

    from mmfw.cli.main import main

    tiny_experiment["data"]["train"] = [{"path": str(shards)}]
    if case == "eval":
        tiny_experiment["data"]["eval"] = [{"path": str(shards)}]
        expected = (f"c.yaml: data: eval[0]: {str(shards)!r} is a streamed dataset (webdataset); evaluation reads "
                    "JSON/JSONL files")
    elif case == "modality":
        tiny_experiment["training"]["group_by_modality"] = True
        expected = ("c.yaml: training.group_by_modality: not available for streamed datasets (data.train is "
                    "webdataset); use group_by_length or packing")
    else:
        tiny_experiment["stages"] = [{"name": "align", "max_steps": 1},
                                     {"name": "tune", "max_steps": 1, "group_by_modality": True}]
        expected = ("c.yaml: stages[1] (tune): group_by_modality: not available for streamed datasets (data.train is "
                    "webdataset); use group_by_length or packing")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_experiment), encoding="utf-8")
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and err.startswith("error: ")  # one line, no traceback
    assert not (tmp_path / "run").exists()  # found when the config loads, before anything is built
