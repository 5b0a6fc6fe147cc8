"""What a streamed source gives the stream: shards (the unit spread over processes and workers) and raw records.

A :class:`StreamSource` lists its shards cheaply (no record is read) and reads one shard's records in order,
optionally every ``stride``-th one from ``offset`` (when there are fewer shards than reading processes). A
:class:`RawRecord` is lazy: its record (a LLaVA dict) is decoded only when :meth:`RawRecord.load` is called, so the
stream can skip records on resume without decoding them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

__all__ = ["RawRecord", "StreamSource"]


@dataclass
class RawRecord:
    """One record of a streamed source: where it is, and how to decode it and its images."""

    index: int
    """Position of the record in its source (stable: seeds the augmentation)."""
    location: str
    """``SHARD.tar:KEY`` or ``DIR[row]``: how messages name the record."""
    read: Callable[[], tuple[dict[str, Any], Callable[[str], Image.Image]]]
    """Decodes the LLaVA record and returns it with the function that opens its images by name; raises
    :class:`~mmfw.data.errors.RecordError`."""

    def load(self) -> tuple[dict[str, Any], Callable[[str], Image.Image]]:
        return self.read()


class StreamSource(ABC):
    """A dataset read as a stream of shards (see module docstring)."""

    name: str
    """The YAML path of the dataset (``data.train[0]``), for messages."""

    @abstractmethod
    def shards(self) -> list[Any]:
        """Opaque, picklable shard descriptors, in a fixed order."""

    @abstractmethod
    def records(self, shard: Any, offset: int = 0, stride: int = 1) -> Iterator[RawRecord]:
        """Records ``offset, offset + stride, ...`` of ``shard``, in order. Raises
        :class:`~mmfw.data.errors.DataError` for a shard that cannot be read at all."""

    @abstractmethod
    def num_records(self) -> int | None:
        """How many records the source holds, when known without reading it."""
