"""Fusion: splice image features into token embeddings.

mmfw's :func:`mmfw.model.fusion.splice_image_features` (one ``index_copy``) against transformers' Llava path (its
``get_placeholder_mask`` then ``masked_scatter``, as ``LlavaModel.forward`` does) and a LLaVA-style per-row loop
(split each row at its placeholders and concatenate text embeddings and image features, as the original LLaVA
``prepare_inputs_labels_for_multimodal`` does, written without its extra bookkeeping). Same inputs for all three; the
outputs must be identical (tolerance 0) before anything is timed.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from benchmarks.common import check_close, count_ops, interleaved

IMAGE_TOKEN = 7


def inputs(batch: int, patches: int, dim: int, text: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    seq = patches + text
    ids = torch.randint(10, 500, (batch, seq), generator=g)
    ids[:, 5:5 + patches] = IMAGE_TOKEN
    embeds = torch.randn(batch, seq, dim, generator=g)
    features = torch.randn(batch * patches, dim, generator=g)
    return embeds, ids, features


def mmfw_splice(embeds: torch.Tensor, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    from mmfw.model.fusion import splice_image_features

    return splice_image_features(embeds, ids, IMAGE_TOKEN, features)[0]


def transformers_masked_scatter(embeds: torch.Tensor, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    from transformers.models.llava.modeling_llava import LlavaModel

    # LlavaModel.get_placeholder_mask reads only config.image_token_id when input_ids are given
    owner = SimpleNamespace(config=SimpleNamespace(image_token_id=IMAGE_TOKEN))
    mask = LlavaModel.get_placeholder_mask(owner, ids, inputs_embeds=embeds, image_features=features)
    return embeds.masked_scatter(mask, features.to(embeds.dtype))


def llava_loop(embeds: torch.Tensor, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    rows, used = [], 0
    for b in range(ids.shape[0]):
        where = (ids[b] == IMAGE_TOKEN).nonzero().squeeze(1).tolist()
        parts, start = [], 0
        # consecutive placeholders form one image: take its feature rows as one block
        runs: list[tuple[int, int]] = []
        for p in where:
            if runs and runs[-1][1] == p:
                runs[-1] = (runs[-1][0], p + 1)
            else:
                runs.append((p, p + 1))
        for lo, hi in runs:
            parts += [embeds[b, start:lo], features[used:used + hi - lo]]
            used += hi - lo
            start = hi
        parts.append(embeds[b, start:])
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def repeated(fn: Any, args: tuple[torch.Tensor, ...], times: int) -> Any:
    def call() -> None:
        for _ in range(times):
            fn(*args)
    return call


IMPLEMENTATIONS = {"mmfw": mmfw_splice, "transformers": transformers_masked_scatter, "llava-loop": llava_loop}


def run(smoke: bool, repeats: int, **_: Any) -> dict[str, Any]:
    patches, dim = (16, 64) if smoke else (576, 1024)
    batches = (1, 2) if smoke else (1, 2, 4, 8, 16)
    inner = 2 if smoke else 10
    rows = []
    for batch in batches:
        x = inputs(batch, patches, dim)
        ref = mmfw_splice(*x)
        for name, fn in IMPLEMENTATIONS.items():
            check_close(f"fusion B={batch}: {name} vs mmfw", fn(*x), ref, atol=0.0)
        ops = {name: count_ops(repeated(fn, x, 1)) for name, fn in IMPLEMENTATIONS.items()}
        t = interleaved({name: repeated(fn, x, inner) for name, fn in IMPLEMENTATIONS.items()}, repeats)
        rows.append({"batch": batch, "patches": patches, "dim": dim,
                     "ms": {n: {k: v / inner * 1e3 for k, v in t[n].items() if k != "runs"} for n in t},
                     "aten_ops": ops})
    return {"name": "fusion", "tolerance": "exact (atol 0)", "rows": rows}
