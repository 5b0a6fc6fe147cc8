"""An mmfw eval set (LLaVA JSON/JSONL, one question and one image per record) as a Hugging Face ``datasets`` folder
(``DatasetDict`` with a ``test`` split, ``save_to_disk`` format) for lmms-eval's local tasks.

Columns: ``id``, ``question`` (the user turn, image placeholder removed), ``answer`` (the reference reply),
``task`` (the record's ``task`` field, ``""`` without one) and ``image`` (the PNG/JPEG bytes, so the folder is
self-contained).
"""

from __future__ import annotations

from pathlib import Path

from mmfw.data.conversation import DEFAULT_IMAGE_TOKEN, load_records, parse_record
from mmfw.data.dataset import record_location
from mmfw.data.errors import DataError, RecordError

HF_SPLIT = "test"


def eval_columns(path: str | Path, image_root: str | Path | None = None, image_token: str = DEFAULT_IMAGE_TOKEN,
                 limit: int | None = None) -> dict[str, list]:
    """The columns of :func:`write_hf_dataset` for the first ``limit`` records of ``path``. A record with more than
    one question or other than one image is a :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: eval file not found")
    root = Path(image_root) if image_root is not None else path.parent
    columns: dict[str, list] = {"id": [], "question": [], "answer": [], "task": [], "image": []}
    for pos, rec in load_records(path):
        if limit is not None and len(columns["id"]) >= limit:
            break
        where = record_location(path, pos)
        if isinstance(rec, RecordError):
            raise DataError(f"{where}: {rec.message}")
        try:
            conv = parse_record(rec, default_id=f"{path.name}:{pos}", image_token=image_token)
        except RecordError as e:
            raise DataError(f"{where}: {e.message}") from None
        users = [m for m in conv.prompt_messages if m["role"] == "user"]
        if len(users) != 1 or len(conv.images) != 1:
            raise DataError(f"{where}: record {conv.id!r} has {len(users)} question(s) and {len(conv.images)} "
                            "image(s); an lmms-eval task here takes exactly one of each")
        image = root / conv.images[0]
        if not image.is_file():
            raise DataError(f"{where}: record {conv.id!r}: image not found: {image}")
        columns["id"].append(conv.id)
        columns["question"].append(users[0]["content"].replace(image_token, "").strip())
        columns["answer"].append(conv.answers[-1])
        columns["task"].append(str(conv.metadata.get("task", "")))
        columns["image"].append({"bytes": image.read_bytes(), "path": image.name})
    if not columns["id"]:
        raise DataError(f"{path}: no records")
    return columns


def write_hf_dataset(path: str | Path, out_dir: str | Path, image_root: str | Path | None = None,
                     image_token: str = DEFAULT_IMAGE_TOKEN, limit: int | None = None) -> Path:
    """Write the eval set ``path`` to ``out_dir`` (replaced if it exists) with ``datasets.save_to_disk``."""
    import datasets

    columns = eval_columns(path, image_root, image_token, limit)
    features = datasets.Features({"id": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string"), "task": datasets.Value("string"),
                                  "image": datasets.Image()})
    dataset = datasets.DatasetDict({HF_SPLIT: datasets.Dataset.from_dict(columns, features=features)})
    out_dir = Path(out_dir)
    dataset.save_to_disk(str(out_dir))
    return out_dir
