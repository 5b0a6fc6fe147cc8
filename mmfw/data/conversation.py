"""LLaVA-format records -> validated :class:`Conversation` objects.

A LLaVA record looks like::

    {"id": "000001", "image": "coco/000001.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]}

:func:`parse_record` accepts ``image`` (one relative path), ``images`` (a list of them) or neither (a text-only
record); turns written either as ``from``/``value`` (``human`` -> ``user``, ``gpt`` -> ``assistant``, ``system``) or
as ``role``/``content``. It checks the conversation shape (an optional leading system turn, then user and assistant
turns alternating, starting with a user turn and ending with an assistant turn) and the image placeholders: when a
record has images but no placeholder at all, ``"<image>\\n"`` is prepended to the first user turn once per image
(LLaVA's behaviour); otherwise the number of placeholders must equal the number of images. Placeholders may only
appear in user or system turns.

Every problem raises :class:`~mmfw.data.errors.RecordError`, whose ``reason_code`` is a short slug (for counting
skipped records by cause) and whose message says what is wrong.

:func:`load_records` streams the raw records of a ``.json`` (a list) or ``.jsonl`` (one record per line) file; a
malformed JSONL line is yielded as a ``"bad-json"`` :class:`RecordError` instead of stopping the whole file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfw.data.errors import RecordError

logger = logging.getLogger(__name__)

__all__ = [
    "ROLE_ALIASES",
    "Conversation",
    "RecordError",
    "load_records",
    "parse_record",
]

DEFAULT_IMAGE_TOKEN = "<image>"

#: LLaVA speaker names (and the canonical role names themselves) -> chat-template roles.
ROLE_ALIASES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


_RECORD_KEYS = frozenset({"id", "image", "images", "conversations"})


@dataclass(frozen=True)
class Conversation:
    """One validated record: chat messages (``role`` in system/user/assistant, ``content`` str) and image paths.

    ``images`` are the paths as written in the record (relative to the dataset's image root), in placeholder order.
    ``metadata`` holds the record's other keys (e.g. the synthetic data's ``task``), for per-group metrics.
    """

    id: str
    messages: list[dict[str, str]]
    images: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def answers(self) -> list[str]:
        """The assistant replies, in order."""
        return [m["content"] for m in self.messages if m["role"] == "assistant"]

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """The messages up to, and excluding, the last assistant reply (what a model is asked to continue)."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return [dict(m) for m in self.messages[:last]]


def _parse_images(record: Mapping[str, Any], rid: str) -> list[str]:
    has_image, has_images = "image" in record, "images" in record
    if has_image and has_images and record["image"] is not None and record["images"] is not None:
        raise RecordError("bad-image", f"record {rid!r} has both 'image' and 'images'")
    raw: Any = record.get("images") if has_images and record["images"] is not None else record.get("image")
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise RecordError("bad-image", f"record {rid!r}: 'image(s)' must be a string or a list of strings, "
                                       f"got {type(raw).__name__}")
    for p in raw:
        if not isinstance(p, str) or not p.strip():
            raise RecordError("bad-image", f"record {rid!r}: image paths must be non-empty strings, got {p!r}")
    return list(raw)


def _parse_turn(turn: Any, index: int, rid: str) -> dict[str, str]:
    if not isinstance(turn, Mapping):
        raise RecordError("bad-turn", f"record {rid!r}: turn {index} is a {type(turn).__name__}, not an object")
    if "from" in turn or "value" in turn:
        speaker, content = turn.get("from"), turn.get("value")
        keys = "'from'/'value'"
    else:
        speaker, content = turn.get("role"), turn.get("content")
        keys = "'role'/'content'"
    if speaker is None or content is None:
        raise RecordError("bad-turn", f"record {rid!r}: turn {index} needs {keys} (keys found: {sorted(turn)})")
    if not isinstance(speaker, str) or speaker.lower() not in ROLE_ALIASES:
        raise RecordError("bad-role", f"record {rid!r}: turn {index} has role {speaker!r}; expected one of "
                                      f"{sorted(ROLE_ALIASES)}")
    if not isinstance(content, str):
        raise RecordError("bad-content", f"record {rid!r}: turn {index} content must be a string, got "
                                         f"{type(content).__name__}")
    return {"role": ROLE_ALIASES[speaker.lower()], "content": content}


def _check_roles(messages: list[dict[str, str]], rid: str) -> None:
    if not messages:
        raise RecordError("empty-conversation", f"record {rid!r} has no turns")
    body = messages[1:] if messages[0]["role"] == "system" else messages
    for i, m in enumerate(messages):
        if m["role"] == "system" and i != 0:
            raise RecordError("bad-role", f"record {rid!r}: a system turn is only allowed first (turn {i})")
    if not body:
        raise RecordError("empty-conversation", f"record {rid!r} has only a system turn")
    offset = len(messages) - len(body)
    if body[0]["role"] == "assistant":
        raise RecordError("starts-with-assistant", f"record {rid!r}: the first turn after the optional system "
                                                   f"turn must be from the user, got an assistant turn")
    for j in range(1, len(body)):
        if body[j]["role"] == body[j - 1]["role"]:
            raise RecordError("roles-not-alternating", f"record {rid!r}: turns {offset + j - 1} and {offset + j} "
                                                       f"are both {body[j]['role']!r}; user and assistant turns "
                                                       f"must alternate")
    if not any(m["role"] == "assistant" for m in body):
        raise RecordError("no-assistant-reply", f"record {rid!r} has no assistant reply to learn from")
    if body[-1]["role"] != "assistant":
        raise RecordError("ends-with-user", f"record {rid!r}: the last turn is a user turn with no reply")
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise RecordError("empty-reply", f"record {rid!r}: assistant turn {i} is empty; there is nothing to "
                                             f"learn from it")


def _fix_placeholders(messages: list[dict[str, str]], images: list[str], rid: str, image_token: str) -> None:
    counts = [m["content"].count(image_token) for m in messages]
    for i, (m, c) in enumerate(zip(messages, counts, strict=True)):
        if c and m["role"] == "assistant":
            raise RecordError("image-in-reply", f"record {rid!r}: assistant turn {i} contains {image_token!r}; "
                                                f"image placeholders belong in user turns")
    total = sum(counts)
    if images and total == 0:
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first_user] = {"role": "user",
                                "content": f"{image_token}\n" * len(images) + messages[first_user]["content"]}
    elif total != len(images):
        raise RecordError("image-placeholder-mismatch", f"record {rid!r} has {len(images)} image(s) but {total} "
                                                        f"{image_token!r} placeholder(s)")


def parse_record(record: Any, *, default_id: str | None = None, image_token: str = DEFAULT_IMAGE_TOKEN
                 ) -> Conversation:
    """Validate one LLaVA record and return it as a :class:`Conversation`.

    Args:
        record: The decoded JSON object.
        default_id: The id to use when the record has none (e.g. ``"file.json:17"``).
        image_token: The placeholder string marking where an image goes.

    Raises:
        RecordError: with reason codes ``not-an-object``, ``missing-conversations``, ``bad-turn``, ``bad-role``,
            ``bad-content``, ``bad-image``, ``empty-conversation``, ``starts-with-assistant``,
            ``roles-not-alternating``, ``no-assistant-reply``, ``ends-with-user``, ``empty-reply``,
            ``image-in-reply`` or ``image-placeholder-mismatch`` (see :data:`mmfw.data.errors.REASONS`).
    """
    if not isinstance(record, Mapping):
        raise RecordError("not-an-object", f"record {default_id!r} is a {type(record).__name__}, not a JSON object")
    rid = record.get("id", default_id)
    rid = "<unknown>" if rid is None else str(rid)
    turns = record.get("conversations")
    if turns is None:
        raise RecordError("missing-conversations", f"record {rid!r} has no 'conversations' list")
    if not isinstance(turns, list):
        raise RecordError("missing-conversations", f"record {rid!r}: 'conversations' must be a list, got "
                                                    f"{type(turns).__name__}")
    images = _parse_images(record, rid)
    messages = [_parse_turn(t, i, rid) for i, t in enumerate(turns)]
    _check_roles(messages, rid)
    _fix_placeholders(messages, images, rid, image_token)
    metadata = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
    return Conversation(id=rid, messages=messages, images=images, metadata=metadata)


def load_records(path: str | Path) -> Iterator[tuple[int, dict | RecordError]]:
    """Yield ``(position, record or RecordError)`` for every record of a ``.json`` or ``.jsonl`` file.

    ``position`` is the 0-based index in a ``.json`` list and the 1-based line number in a ``.jsonl`` file (blank
    lines are skipped). A JSONL line that is not valid UTF-8 or not valid JSON is yielded as a ``"bad-json"``
    :class:`RecordError` naming the file and line. A ``.json`` file that cannot be decoded, or is not a list,
    raises a :class:`RecordError` (``"bad-json"``) since no record of it can be trusted.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except RecursionError:
                    yield lineno, RecordError("bad-json", f"{path}:{lineno}: JSON nested too deeply to parse")
                    continue
                except UnicodeDecodeError as e:
                    yield lineno, RecordError("bad-json", f"{path}:{lineno}: line is not valid UTF-8 ({e.reason} at "
                                                          f"byte {e.start})")
                    continue
                except json.JSONDecodeError as e:
                    yield lineno, RecordError("bad-json", f"{path}:{lineno}: invalid JSON ({e.msg}, column {e.colno})")
                    continue
                if not isinstance(obj, dict):
                    yield lineno, RecordError("not-an-object", f"{path}:{lineno}: expected a JSON object, got "
                                                               f"{type(obj).__name__}")
                    continue
                yield lineno, obj
    elif suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except RecursionError:
            raise RecordError("bad-json", f"{path}: JSON nested too deeply to parse") from None
        except UnicodeDecodeError as e:
            raise RecordError("bad-json", f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
        except json.JSONDecodeError as e:
            raise RecordError("bad-json", f"{path}: invalid JSON ({e.msg}, line {e.lineno} column {e.colno})") from e
        if not isinstance(data, list):
            raise RecordError("bad-json", f"{path}: expected a JSON list of records, got {type(data).__name__}")
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                yield i, RecordError("not-an-object", f"{path}[{i}]: expected a JSON object, got "
                                                      f"{type(obj).__name__}")
            else:
                yield i, obj
    else:
        raise ValueError(f"{path}: unsupported dataset file type {path.suffix!r}; expected .json or .jsonl")
