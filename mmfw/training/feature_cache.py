"""On-disk cache of a frozen vision encoder's features (for align stages: later epochs skip the encoder).

Entries are keyed by a hash of each tile's pixels, in a directory named by a fingerprint of the encoder (its class,
config and weights), so a cache can never serve features of another encoder, and later runs with the same encoder
(sweeps, re-runs) reuse it. Features are computed with the encoder in eval mode and without gradients (a frozen
encoder's features are then a function of the pixels). Entries are written in safetensors shards, one writer per
process (shard names carry the process index and a random suffix), each shard written to a temporary name and
renamed.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

if TYPE_CHECKING:
    from mmfw.encoders.base import VisionEncoder

logger = logging.getLogger(__name__)

SHARD_ENTRIES = 512


def encoder_fingerprint(encoder: VisionEncoder) -> str:
    """Hash of the encoder's class, config and every parameter/buffer (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    h.update(f"{type(encoder).__module__}.{type(encoder).__qualname__}".encode())
    h.update(encoder.cfg.model_dump_json().encode())
    for name, t in encoder.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def tile_key(tile: torch.Tensor) -> str:
    t = tile.detach().cpu().contiguous()
    h = hashlib.blake2b(f"{tuple(t.shape)}:{t.dtype}".encode(), digest_size=16)
    h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EncoderFeatureCache:
    """Serves ``encoder(pixel_values)`` from disk when every tile was seen before (see module docstring).

    :meth:`install` replaces the encoder instance's ``forward`` (its parameters and state-dict names are unchanged);
    :meth:`close` writes pending entries and restores it.
    """

    def __init__(self, root: str | Path, encoder: VisionEncoder, process_index: int = 0) -> None:
        self.encoder = encoder
        self.dir = Path(root) / encoder_fingerprint(encoder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process_index = process_index
        self.index: dict[str, Path] = {}
        self._handles: dict[Path, Any] = {}
        for shard in sorted(self.dir.glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():
                    self.index.setdefault(key, shard)
        self.pending: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0
        self._original = None
        logger.info("encoder feature cache %s: %d entries", self.dir, len(self.index))

    def install(self) -> EncoderFeatureCache:
        self._original = self.encoder.forward
        self.encoder.forward = self.forward  # type: ignore[method-assign]
        return self

    def close(self) -> None:
        """Write pending entries, restore the encoder's forward and log the hits and misses."""
        logger.info("encoder feature cache: %d hits, %d misses", self.hits, self.misses)
        self.flush()
        if self._original is not None:
            del self.encoder.forward
            self._original = None
        self._handles.clear()

    def _lookup(self, key: str) -> torch.Tensor:
        if key in self.pending:
            return self.pending[key]
        shard = self.index[key]
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(shard), framework="pt")
        return self._handles[shard].get_tensor(key)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        keys = [tile_key(t) for t in pixel_values]
        missing = [i for i, k in enumerate(keys) if k not in self.index and k not in self.pending]
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            was_training = self.encoder.training
            self.encoder.eval()
            try:
                feats = self._original(pixel_values[missing])
            finally:
                self.encoder.train(was_training)
            for i, f in zip(missing, feats, strict=True):
                self.pending.setdefault(keys[i], f.detach().cpu().contiguous())
        out = torch.stack([self._lookup(k) for k in keys]).to(pixel_values.device)
        if len(self.pending) >= SHARD_ENTRIES:
            self.flush()
        return out

    def flush(self) -> None:
        if not self.pending:
            return
        name = f"shard-p{self.process_index}-{uuid.uuid4().hex[:12]}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file(dict(self.pending), str(tmp))
        final = self.dir / name
        tmp.replace(final)
        for key in self.pending:
            self.index.setdefault(key, final)
        self.pending = {}
