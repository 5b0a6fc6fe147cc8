"""An lmms-eval model for mmfw runs: ``--model mmfw --model_args pretrained=RUN_DIR``.

Registered with lmms-eval through its ``lmms_eval.models`` entry point (see :mod:`mmfw.eval.manifest`); this module
imports lmms-eval and is imported only when that model is requested. A run directory, a checkpoint directory or
any mmfw model directory loads through :func:`mmfw.inference.load_pipeline`, so prompts are built exactly as
``mmfw generate`` and mmfw's own evaluation build them (chat template, system prompt, image placeholders first).

* ``generate_until``: batched greedy answers (sampling when a task asks for it), cut at the task's ``until``
  strings; without ``max_new_tokens`` from the task, the run's ``training.max_new_tokens``.
* ``loglikelihood``: the log-probability of the continuation's tokens after the prompt, and whether greedy decoding
  would produce exactly those tokens.
* ``generate_until_multi_round`` is not supported (an error naming the task).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image

logger = logging.getLogger(__name__)

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "num_beams")


class MMFWLmms(lmms):
    """A trained mmfw model answering lmms-eval requests.

    Args:
        pretrained: run directory, checkpoint directory or model directory.
        device: torch device (``cpu``, ``cuda``, ``cuda:1``).
        batch_size: prompts per ``generate`` call.
        max_new_tokens: default answer length; the run's ``training.max_new_tokens`` when not given.
    """

    is_simple = True

    def __init__(self, pretrained: str, device: str | None = None, batch_size: int | str = 1,
                 max_new_tokens: int | str | None = None, max_batch_size: int | None = None, **kwargs: Any) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"mmfw lmms-eval model: unknown model_args {sorted(kwargs)}; known: pretrained, device, "
                             "batch_size, max_new_tokens")
        from mmfw.inference import load_pipeline

        self.pipeline = load_pipeline(pretrained, device=device or "cpu")
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens) if max_new_tokens else self.pipeline.cfg.training.max_new_tokens

    # -- requests ------------------------------------------------------------------------------------------------
    def _visuals(self, request: Instance) -> list[Image.Image]:
        _, _, doc_to_visual, doc_id, task, split = request.args[:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        visuals = [v for v in (visuals or []) if v is not None]
        bad = [type(v).__name__ for v in visuals if not isinstance(v, Image.Image)]
        if bad:
            raise ValueError(f"task {task!r} doc {doc_id}: mmfw models take images only, got {bad}")
        return [v.convert("RGB") for v in visuals]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = [""] * len(requests)
        for indices, gen_kwargs in _chunks(requests, self.batch_size):
            kwargs, until, max_new = self._generation_settings(gen_kwargs)
            items = [(self._visuals(requests[i]), requests[i].args[0]) for i in indices]
            texts = self.pipeline.generate_batch(items, max_new_tokens=max_new, **kwargs)
            for i, text in zip(indices, texts, strict=True):
                for stop in until:
                    text = text.split(stop)[0]
                answers[i] = text
                self.cache_hook.add_partial("generate_until", (requests[i].args[0], gen_kwargs), text)
        return answers

    def _generation_settings(self, gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str], int]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else [s for s in until if s]
        max_new = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
        sample = bool(gen_kwargs.get("do_sample")) or float(gen_kwargs.get("temperature") or 0) > 0
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs.update({k: gen_kwargs[k] for k in _SAMPLING_KEYS if gen_kwargs.get(k) is not None})
        elif gen_kwargs.get("num_beams"):
            kwargs["num_beams"] = int(gen_kwargs["num_beams"])
        return kwargs, until, max_new

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        out = []
        p = self.pipeline
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            prompt = p.prepare(self._visuals(request), context)
            cont = torch.tensor(p.tokenizer.encode(continuation, add_special_tokens=False), dtype=torch.long)
            if cont.numel() == 0:
                out.append((0.0, True))
                continue
            n = prompt["input_ids"].numel()
            item = {**prompt, "input_ids": torch.cat([prompt["input_ids"], cont]),
                    "labels": torch.cat([prompt["labels"], cont])}
            batch = p.collator([item]).to(p.device)
            logits = p.model(**batch.model_inputs()).logits[0, n - 1: n - 1 + cont.numel()].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            cont = cont.to(logprobs.device)
            total = float(logprobs.gather(1, cont[:, None]).sum())
            greedy = bool(torch.equal(logprobs.argmax(dim=-1), cont))
            out.append((total, greedy))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), (total, greedy))
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        task = requests[0].args[4] if requests and len(requests[0].args) > 4 else "?"
        raise NotImplementedError(f"task {task!r}: the mmfw lmms-eval model answers single-round tasks "
                                  "(generate_until, loglikelihood), not generate_until_multi_round")


def _chunks(requests: Sequence[Instance], size: int) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """Consecutive requests with equal generation settings, at most ``size`` at a time (order kept)."""
    current: list[int] = []
    settings: dict[str, Any] | None = None
    for i, request in enumerate(requests):
        gen = dict(request.args[1] or {})
        if current and (gen != settings or len(current) == size):
            yield current, settings or {}
            current = []
        current.append(i)
        settings = gen
    if current:
        yield current, settings or {}
