"""Tests for the skip accounting a training loop keeps (mmfw.data.report), end to end through a DataLoader."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmfw.config.experiment import DataConfig, DatasetSpec
from mmfw.data.batch import VLMBatch
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import build_dataset
from mmfw.data.errors import TooManySkippedError
from mmfw.data.report import DataReport, SkippedSample, TruncatedSample, summarize_skips
from mmfw.data.tokenizer_train import train_tokenizer
from mmfw.encoders.base import VisionSpec
from mmfw.image_strategies.base import VisionGeometry
from mmfw.image_strategies.resize import ResizeStrategy, ResizeStrategyConfig

SPEC = VisionSpec(image_size=(16, 16), patch_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), embed_dim=8)
STRATEGY = ResizeStrategy(ResizeStrategyConfig(), VisionGeometry(SPEC, lambda g: g[0] * g[1], lambda g: g), 8)


def skip(i: int | None, reason: str) -> SkippedSample:
    return SkippedSample(f"d.jsonl:{i}", f"r{i}", reason, "msg", index=i)


def test_summary_orders_reasons_by_count_and_ids_by_index() -> None:
    skips = [skip(5, "missing-image"), skip(2, "missing-image"), SkippedSample("d.jsonl:3", None, "bad-json", "m"),
             skip(9, "too-long"), skip(1, "missing-image")]
    assert summarize_skips(skips, max_ids=2) == ("missing-image: 3 ('r1', 'r2', ...), bad-json: 1 (d.jsonl:3), "
                                                 "too-long: 1 ('r9')")


def test_report_counts_per_epoch_and_keeps_static_skips(caplog) -> None:
    report = DataReport(total=10, static=[skip(None, "bad-json")], max_skip_ratio=0.5, name="data.train")
    batch = VLMBatch(input_ids=torch.zeros(3, 4), labels=torch.zeros(3, 4), skipped=[skip(4, "missing-image")],
                     truncated=[TruncatedSample("r7", 7, "drop-turns", 50, 40)])
    assert report.observe(batch) is True
    empty = VLMBatch(input_ids=torch.zeros(0, 0), labels=torch.zeros(0, 0), skipped=[skip(8, "corrupt-image")])
    assert report.observe(empty) is False  # nothing left to train on
    with caplog.at_level(logging.WARNING, logger="mmfw.data.report"):
        metrics = report.end_epoch()
    assert metrics == {"data/skipped": 3.0, "data/truncated": 1.0, "data/skipped/bad-json": 1.0,
                       "data/skipped/corrupt-image": 1.0, "data/skipped/missing-image": 1.0}
    text = caplog.text
    assert "data.train epoch 0: 5 samples loaded; 3 skipped" in text and "1 truncated (drop-turns: 1; 'r7')" in text
    # the next epoch starts from the parse-time skips only
    assert report.epoch == 1 and report.metrics()["data/skipped"] == 1.0 and report.samples_seen == 0


def test_report_stops_as_soon_as_the_ratio_is_exceeded() -> None:
    report = DataReport(total=10, static=[skip(None, "bad-json")], max_skip_ratio=0.2, name="data.train")
    report.record([skip(1, "missing-image")], samples=4)  # 2 of 10: at the limit, fine
    with pytest.raises(TooManySkippedError, match=r"data.train: 3 of 10 samples \(30.0%\) are unusable, more than "
                                                  r"data.max_skip_ratio=0.2: missing-image: 2"):
        report.record([skip(2, "missing-image")], samples=1)
    DataReport(total=10, max_skip_ratio=None).record([skip(i, "x") for i in range(10)])  # no limit


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(["what color is it? red blue green"] * 4, tmp_path_factory.mktemp("tok"), vocab_size=280)


def _write(tmp_path: Path, n_good: int, n_missing: int, n_badjson: int) -> DatasetSpec:
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "ok.png")
    lines = []
    for i in range(n_good + n_missing):
        image = "ok.png" if i < n_good else f"missing{i}.png"
        lines.append(json.dumps({"id": f"s{i}", "image": image, "conversations": [
            {"from": "human", "value": "<image>\nwhat color is it?"}, {"from": "gpt", "value": "red"}]}))
    lines += ["{oops"] * n_badjson
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return DatasetSpec(path=str(tmp_path / "d.jsonl"))


def test_dataloader_with_workers_reports_deterministically(tokenizer, tmp_path: Path) -> None:
    spec = _write(tmp_path, n_good=9, n_missing=3, n_badjson=1)
    cfg = DataConfig(max_length=64, max_skip_ratio=0.5)
    ds = build_dataset([spec], cfg, tokenizer, STRATEGY, image_token="<image>")
    assert len(ds) == 12 and [s.reason for s in ds.skipped] == ["bad-json"]

    def epoch(num_workers: int) -> tuple[dict[str, float], list[str | None], int]:
        report = DataReport.for_dataset(ds, cfg.max_skip_ratio)
        loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=num_workers, collate_fn=VLMCollator(0),
                            generator=torch.Generator().manual_seed(0))
        rows = 0
        for batch in loader:
            if report.observe(batch):
                rows += batch.input_ids.shape[0]
        ids = sorted(s.id for s in report.all_skipped if s.id)
        return report.end_epoch(), ids, rows

    metrics, ids, rows = epoch(0)
    assert metrics["data/skipped"] == 4 and metrics["data/skipped/missing-image"] == 3 and rows == 9
    assert ids == ["s10", "s11", "s9"]
    assert epoch(2) == (metrics, ids, rows)  # same accounting when workers load the samples


def test_too_many_invalid_records_fail_at_construction(tokenizer, tmp_path: Path) -> None:
    spec = _write(tmp_path, n_good=3, n_missing=0, n_badjson=2)
    with pytest.raises(TooManySkippedError, match=r"data.train: 2 of 5 records \(40.0%\) are invalid.*bad-json: 2"):
        build_dataset([spec], DataConfig(max_skip_ratio=0.2), tokenizer, STRATEGY, image_token="<image>")
    build_dataset([spec], DataConfig(max_skip_ratio=0.4), tokenizer, STRATEGY, image_token="<image>")


def test_packed_batches_count_samples_not_rows() -> None:
    report = DataReport(total=10, static=[], max_skip_ratio=None, name="data.train")
    packed = VLMBatch(input_ids=torch.zeros(2, 8), labels=torch.zeros(2, 8), sample_lengths=[[3, 3, 2], [5]],
                      skipped=[skip(4, "too-long")])
    assert report.observe(packed) is True
    assert report.samples_seen == 5, "four packed samples in two rows, one skipped"
