"""Streamed dataset sources: Hugging Face ``save_to_disk`` directories and WebDataset tar shards.

:func:`open_source` opens the source of one :class:`~mmfw.config.data.DatasetSpec`; the stream
(:mod:`mmfw.data.stream`) reads its shards. Opening reads no record.
"""

from __future__ import annotations

from mmfw.config.data import DatasetSpec, StreamConfig
from mmfw.data.sources.base import RawRecord, StreamSource

__all__ = ["RawRecord", "StreamSource", "open_source"]


def open_source(spec: DatasetSpec, name: str, cfg: StreamConfig) -> StreamSource:
    """The source of ``spec`` (``name`` is its YAML path, e.g. ``data.train[0]``)."""
    if spec.kind == "hf":
        from mmfw.data.sources.hf import HFSource

        return HFSource(spec, name, cfg.hf_shard_rows)
    if spec.kind == "webdataset":
        from mmfw.data.sources.webdataset import WebDatasetSource

        return WebDatasetSource(spec, name)
    raise ValueError(f"{name}: {spec.path!r} is a JSON dataset, not a streamed one")
