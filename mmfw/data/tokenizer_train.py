"""Offline byte-level BPE tokenizer training for language models trained from scratch.

:func:`train_tokenizer` trains a small byte-level BPE vocabulary with the ``tokenizers`` library on an iterable of
texts (for example :func:`texts_from_llava_json` over a LLaVA-format dataset), wraps it in a
:class:`transformers.PreTrainedTokenizerFast` with ChatML special tokens and chat template, and saves it with
``save_pretrained`` so that ``AutoTokenizer.from_pretrained(out_dir)`` reloads it without network access.

Design points:

* Byte-level BPE (``ByteLevel`` pre-tokenizer and decoder, all 256 bytes in the initial alphabet): every string is
  encodable without an unknown token and ``decode(encode(text)) == text``.
* Every newline character is split off as its own pre-token before the GPT-2 style byte-level regex runs, so a
  newline never merges with neighbouring characters. Together with special tokens being matched before
  pre-tokenization, this makes chat-template tokenization *prefix-stable*: the ids of a conversation prefix rendered
  with ``add_generation_prompt=True`` are a prefix of the ids of the full conversation, which the label masker
  relies on.
* Special tokens (fixed ids, in this order): ``<|pad|>`` (pad), ``<|endoftext|>``, ``<|bos|>`` (bos, never added
  automatically), ``<|im_start|>``, ``<|im_end|>`` (eos), then the caller's extra special tokens such as
  ``<image>``. All are matched atomically: ``"<image>"`` anywhere in a text becomes exactly one id.
* No normalizer and ``clean_up_tokenization_spaces=False``, so text is never altered.
* Training is deterministic for the same texts (in the same order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

__all__ = [
    "BOS_TOKEN",
    "CHATML_TEMPLATE",
    "ENDOFTEXT_TOKEN",
    "EOS_TOKEN",
    "IMAGE_TOKEN",
    "IM_END_TOKEN",
    "IM_START_TOKEN",
    "PAD_TOKEN",
    "texts_from_llava_json",
    "train_tokenizer",
]

PAD_TOKEN = "<|pad|>"
ENDOFTEXT_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|bos|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
EOS_TOKEN = IM_END_TOKEN
IMAGE_TOKEN = "<image>"

_BASE_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, ENDOFTEXT_TOKEN, BOS_TOKEN, IM_START_TOKEN, IM_END_TOKEN)
_BYTE_ALPHABET_SIZE = 256

#: ChatML chat template (``\n`` below are real newlines in the rendered text).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Strings that the chat template always produces; fed to the trainer so that they get compact tokens.
_TEMPLATE_TEXTS: tuple[str, ...] = ("system", "user", "assistant")


def _special_tokens(extra: Sequence[str]) -> list[str]:
    if isinstance(extra, str):
        raise TypeError("special_tokens must be a sequence of strings, not a string")
    out = list(_BASE_SPECIAL_TOKENS)
    for tok in extra:
        if not tok:
            raise ValueError("special tokens must be non-empty strings")
        if tok not in out:
            out.append(tok)
    return out


def _build_backend(special_tokens: Sequence[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 512,
    special_tokens: Sequence[str] = (IMAGE_TOKEN,),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and save it to ``out_dir``.

    Args:
        texts: Training texts (any iterable; consumed once). Special-token strings inside them are ignored by the
            trainer, so e.g. raw ``"<image>\\n..."`` prompts are fine.
        out_dir: Directory for ``save_pretrained`` (created if missing).
        vocab_size: Target vocabulary size including the 256 byte tokens and all special tokens. The trainer may
            stop earlier when the texts offer no more merges.
        special_tokens: Extra special tokens besides the built-in ChatML ones; each is encoded as a single id.

    Returns:
        The tokenizer, with ``pad_token="<|pad|>"``, ``eos_token="<|im_end|>"``, ``bos_token="<|bos|>"`` (not added
        automatically), the extra tokens as ``extra_special_tokens`` and the ChatML ``chat_template``.
    """
    specials = _special_tokens(special_tokens)
    min_size = _BYTE_ALPHABET_SIZE + len(specials)
    if vocab_size < min_size:
        raise ValueError(f"vocab_size must be >= {min_size} (256 bytes + {len(specials)} special tokens)")

    backend = _build_backend(specials)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus() -> Iterator[str]:
        yield from _TEMPLATE_TEXTS
        yield from _TEMPLATE_TEXTS
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must yield str, got {type(text).__name__}")
            yield text

    backend.train_from_iterator(corpus(), trainer=trainer)

    extra = [t for t in specials if t not in (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        extra_special_tokens=extra,
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    logger.info("trained byte-level BPE tokenizer (vocab %d) saved to %s", len(tokenizer), out)
    return tokenizer


def texts_from_llava_json(paths: Sequence[str | Path]) -> Iterator[str]:
    """Yield every conversation turn's text from LLaVA-format JSON (or JSONL) files, with ``<image>`` removed.

    The image placeholder and the whitespace around the remaining text are stripped; empty turns are skipped.
    Files are read in the given order, records and turns in file order. Turns may be ``from``/``value`` or
    ``role``/``content``. Lines and records that are not usable (invalid JSON, not an object, no turn list) are
    left out with one warning per file; training skips and reports them the same way.
    """
    from mmfw.data.conversation import load_records
    from mmfw.data.errors import RecordError

    if isinstance(paths, (str, Path)):
        paths = [paths]
    for p in paths:
        bad = 0
        for _, record in load_records(Path(p)):
            turns = None if isinstance(record, RecordError) else record.get("conversations")
            if not isinstance(turns, list):
                bad += 1
                continue
            for turn in turns:
                if not isinstance(turn, dict):
                    continue
                value = turn.get("value", turn.get("content", ""))
                value = str(value if value is not None else "").replace(IMAGE_TOKEN, "").strip()
                if value:
                    yield value
        if bad:
            logger.warning("%s: %d record(s) without usable conversations left out of the tokenizer corpus", p, bad)
