"""End to end on length-skewed instruction-like data: the comparison of :mod:`benchmarks.end_to_end` on records whose
answer lengths are skewed like instruction data (80 % of the samples 12-100 words, 20 % 100-420; a quarter with an
image; the generator of ``benchmarks/packing.py``), with rows and padding up to 512 tokens."""

from __future__ import annotations

import json
from typing import Any

from benchmarks import end_to_end


def run(smoke: bool, repeats: int, ws: Any, **kwargs: Any) -> dict[str, Any]:
    from benchmarks.packing import skewed_records

    images = [r["image"] for r in json.loads(ws.train_json.read_text()) if "image" in r]
    path = ws.train_json.parent / "skewed.json"  # next to the images the records name
    path.write_text(json.dumps(skewed_records(48 if smoke else 192, images, seed=0)))
    return end_to_end.run(smoke, repeats, ws, train=path, max_length=512, name="end_to_end_skewed", **kwargs)
