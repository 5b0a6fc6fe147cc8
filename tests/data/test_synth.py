"""Tests for the procedural synthetic VQA generator (mmfw.data.synth)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmfw.data import synth
from mmfw.data.synth import (
    COLORS,
    COUNTS,
    POSITIONS,
    QUESTIONS,
    SHAPES,
    TASKS,
    SynthPaths,
    ensure_synthetic_vqa,
    generate_synthetic_vqa,
    normalize_answer,
)

ANSWERS = {"color": tuple(COLORS), "shape": SHAPES, "position": POSITIONS, "count": COUNTS}
PALETTE = {rgb: name for name, rgb in COLORS.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SynthPaths:
    return generate_synthetic_vqa(tmp_path_factory.mktemp("synth"), num_train=1200, num_eval=160, seed=3)


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _answer(rec: dict) -> str:
    return rec["conversations"][1]["value"]


def _question(rec: dict) -> str:
    return rec["conversations"][0]["value"].removeprefix("<image>\n")


def _image(paths: SynthPaths, rec: dict) -> np.ndarray:
    with Image.open(paths.root / rec["image"]) as img:
        assert img.mode == "RGB"
        return np.asarray(img)


def _split(arr: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Background colour (the most common one that is not a palette colour: large shapes may cover more of the image
    than the background) and the boolean foreground mask."""
    colors, counts = np.unique(arr.reshape(-1, 3), axis=0, return_counts=True)
    counts[[tuple(int(c) for c in col) in PALETTE for col in colors]] = 0
    bg = colors[counts.argmax()]
    return tuple(int(c) for c in bg), np.any(arr != bg, axis=-1)


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected components of a boolean mask."""
    seen = np.zeros_like(mask)
    h, w = mask.shape
    n = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        n += 1
        seen[y, x] = True
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return n


def _classify_shape(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()
    if fill > 0.95:
        return "square"
    if fill > 0.7:
        return "circle"
    widths = box.sum(axis=1)
    widest = np.flatnonzero(widths == widths.max()).mean() / (len(widths) - 1)
    return "triangle" if widest > 0.75 else "diamond"


def _assert_answer(arr: np.ndarray, task: str, answer: str, rid: str) -> None:
    """``answer`` is what the image ``arr`` shows for a ``task`` question."""
    _, mask = _split(arr)
    fg_colors = {tuple(int(c) for c in px) for px in np.unique(arr[mask], axis=0)}
    if task == "color":
        assert fg_colors == {COLORS[answer]}, rid
    elif task == "shape":
        assert len(fg_colors) == 1 and _components(mask) == 1, rid
        assert _classify_shape(mask) == answer, rid
    elif task == "position":
        assert _components(mask) == 1, rid
        half = arr.shape[0] // 2
        ys, xs = np.nonzero(mask)
        vertical, horizontal = answer.split()
        assert (ys < half).all() if vertical == "top" else (ys >= half).all(), rid
        assert (xs < half).all() if horizontal == "left" else (xs >= half).all(), rid
    elif task == "count":
        assert _components(mask) == int(answer), rid
        # One shape per quadrant: nothing on the mid lines, as many occupied quadrants as shapes.
        half = arr.shape[0] // 2
        assert not mask[half - 1 : half + 1].any() and not mask[:, half - 1 : half + 1].any(), rid
        quadrants = [mask[:half, :half], mask[:half, half:], mask[half:, :half], mask[half:, half:]]
        assert sum(bool(q.any()) for q in quadrants) == int(answer), rid
    else:
        raise AssertionError(f"unknown task {task!r}")


def _hashes(paths: SynthPaths, records: list[dict]) -> set[str]:
    return {hashlib.sha256((paths.root / r["image"]).read_bytes()).hexdigest() for r in records}


def test_paths_and_json_format(dataset: SynthPaths) -> None:
    assert dataset.train == dataset.root / "train.json"
    assert dataset.eval == dataset.root / "eval.json"
    assert dataset.images == dataset.root / "images"
    for json_path, n, split in ((dataset.train, 1200, "train"), (dataset.eval, 160, "eval")):
        records = _load(json_path)
        assert len(records) == n
        assert len({r["id"] for r in records}) == n
        for rec in records:
            assert rec["id"].startswith(split + "_")
            assert not Path(rec["image"]).is_absolute()
            assert (json_path.parent / rec["image"]).is_file()
            human, gpt = rec["conversations"]
            assert human["from"] == "human" and gpt["from"] == "gpt"
            assert human["value"].startswith("<image>\n")
            assert human["value"].count("<image>") == 1
            assert rec["task"] in TASKS
            assert _question(rec) in QUESTIONS[rec["task"]]
            assert _answer(rec) in ANSWERS[rec["task"]]
            assert normalize_answer(_answer(rec)) == _answer(rec)
    with Image.open(dataset.root / records[0]["image"]) as img:
        assert img.format == "PNG" and img.size == (64, 64) and img.mode == "RGB"


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a = generate_synthetic_vqa(tmp_path / "a", num_train=30, num_eval=10, seed=7)
    b = generate_synthetic_vqa(tmp_path / "b", num_train=30, num_eval=10, seed=7)
    c = generate_synthetic_vqa(tmp_path / "c", num_train=30, num_eval=10, seed=8)
    assert a.train.read_bytes() == b.train.read_bytes()
    assert a.eval.read_bytes() == b.eval.read_bytes()
    files_a = sorted(p.name for p in a.images.iterdir())
    assert files_a == sorted(p.name for p in b.images.iterdir())
    assert len(files_a) == 40
    for name in files_a:
        assert (a.images / name).read_bytes() == (b.images / name).read_bytes()
    assert a.train.read_bytes() != c.train.read_bytes()
    assert any((a.images / n).read_bytes() != (c.images / n).read_bytes() for n in files_a)


def test_eval_split_independent_of_train_size(tmp_path: Path) -> None:
    a = generate_synthetic_vqa(tmp_path / "a", num_train=5, num_eval=12, seed=1)
    b = generate_synthetic_vqa(tmp_path / "b", num_train=40, num_eval=12, seed=1)
    assert a.eval.read_bytes() == b.eval.read_bytes()


def test_train_eval_disjoint(dataset: SynthPaths) -> None:
    train, evl = _load(dataset.train), _load(dataset.eval)
    assert not {r["id"] for r in train} & {r["id"] for r in evl}
    assert not {r["image"] for r in train} & {r["image"] for r in evl}
    assert not _hashes(dataset, train) & _hashes(dataset, evl)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_tasks_and_answers_balanced(dataset: SynthPaths, split: str) -> None:
    records = _load(getattr(dataset, split))
    tasks = Counter(r["task"] for r in records)
    assert set(tasks) == set(TASKS)
    assert max(tasks.values()) - min(tasks.values()) <= 1
    for task in TASKS:
        answers = Counter(_answer(r) for r in records if r["task"] == task)
        assert set(answers) == set(ANSWERS[task])
        assert max(answers.values()) - min(answers.values()) <= 1


def test_question_does_not_reveal_answer(dataset: SynthPaths) -> None:
    """Chi-square test of independence between paraphrase and answer, per task."""
    records = _load(dataset.train)
    # Critical values of chi-square at p = 0.001 for the degrees of freedom that occur: (3 - 1) * (k - 1).
    critical = {6: 22.46, 8: 26.12, 10: 29.59}
    for task in TASKS:
        recs = [r for r in records if r["task"] == task]
        questions, answers = QUESTIONS[task], ANSWERS[task]
        table = np.zeros((len(questions), len(answers)))
        for r in recs:
            table[questions.index(_question(r)), answers.index(_answer(r))] += 1
        assert (table.sum(axis=1) > 0).all(), f"{task}: every paraphrase is used"
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
        chi2 = float(((table - expected) ** 2 / expected).sum())
        dof = (len(questions) - 1) * (len(answers) - 1)
        assert chi2 < critical[dof], f"{task}: chi2={chi2:.1f} (dof {dof})"


def test_images_match_answers(dataset: SynthPaths) -> None:
    records = _load(dataset.eval)
    seen = Counter()
    backgrounds = set()
    for rec in records:
        arr = _image(dataset, rec)
        bg, mask = _split(arr)
        backgrounds.add(bg)
        assert bg not in PALETTE
        assert max(bg) - min(bg) <= 12, "background is a near-neutral grey"
        fg_colors = {tuple(int(c) for c in px) for px in np.unique(arr[mask], axis=0)}
        assert fg_colors and fg_colors <= set(PALETTE), "shapes use exact palette colours (no anti-aliasing)"
        seen[rec["task"]] += 1
        _assert_answer(arr, rec["task"], _answer(rec), rec["id"])
        if rec["task"] in ("color", "shape"):
            ys, xs = np.nonzero(mask)
            side = max(np.ptp(ys), np.ptp(xs)) + 1
            assert 31 <= side <= 0.8 * 64, f"{rec['id']}: one large shape ({side} px)"
    assert set(seen) == set(TASKS)
    assert len(backgrounds) > 20, "backgrounds vary"
    light = sum(1 for bg in backgrounds if min(bg) > 128)
    assert 0 < light < len(backgrounds), "both light and dark backgrounds occur"


@pytest.mark.parametrize(
    ("extra", "turn_counts"),
    [(("color", "shape", "position"), {1, 2, 3}), (("shape",), {1, 2})],
)
def test_extra_train_questions(tmp_path: Path, dataset: SynthPaths, extra: tuple[str, ...], turn_counts: set) -> None:
    """One-shape training scenes are also asked the extra questions they answer; eval keeps one question per image."""
    paths = generate_synthetic_vqa(tmp_path, num_train=1200, num_eval=160, seed=3, extra_train_questions=extra)
    assert paths.eval.read_bytes() == dataset.eval.read_bytes(), "eval split unchanged"
    task_of = {q: t for t, qs in QUESTIONS.items() for q in qs}
    records = _load(paths.train)
    # The first turn is the balanced one, exactly as with one question per image.
    for task in TASKS:
        answers = Counter(_answer(r) for r in records if r["task"] == task)
        assert set(answers) == set(ANSWERS[task]) and max(answers.values()) - min(answers.values()) <= 1
    turns: Counter[int] = Counter()
    asked: Counter[str] = Counter()
    for rec in records:
        conv = rec["conversations"]
        assert [m["from"] for m in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith("<image>\n")
        assert all("<image>" not in m["value"] for m in conv[1:]), "one image placeholder per record"
        tasks = [task_of[conv[0]["value"].removeprefix("<image>\n")]] + [task_of[m["value"]] for m in conv[2::2]]
        assert tasks[0] == rec["task"] and len(set(tasks)) == len(tasks)
        assert set(tasks[1:]) <= set(extra)
        if rec["task"] == "count":
            assert tasks == ["count"]
        else:
            assert {"color", "shape"} & set(extra) <= set(tasks), "colour and shape are always answerable"
        turns[len(tasks)] += 1
        asked.update(tasks)
        arr = _image(paths, rec)
        for task, reply in zip(tasks, conv[1::2], strict=True):
            _assert_answer(arr, task, reply["value"], rec["id"])
    assert set(turns) == turn_counts
    assert asked["shape"] == 900 and asked["count"] == 300
    if "position" in extra:
        assert asked["color"] == 900
        # Position only when the shape lies inside one quadrant: the large shapes of colour and shape scenes never do.
        assert asked["position"] == 300
    else:
        assert asked["color"] == asked["position"] == 300


def test_extra_train_questions_follow_tasks(tmp_path: Path) -> None:
    paths = generate_synthetic_vqa(tmp_path, num_train=40, num_eval=4, tasks=("color", "count"),
                                   extra_train_questions=("shape",))
    assert all(len(r["conversations"]) == 2 for r in _load(paths.train)), "shape is not among the tasks"


def test_train_task_weights(tmp_path: Path, dataset: SynthPaths) -> None:
    """Weighted training task mix (largest remainders), answers still balanced within each task; eval unchanged."""
    paths = generate_synthetic_vqa(tmp_path, num_train=1003, num_eval=160, seed=3,
                                   train_task_weights={"count": 2, "color": 0.5, "shape": 1})
    assert paths.eval.read_bytes() == dataset.eval.read_bytes(), "eval split unchanged"
    records = _load(paths.train)
    # shares 0.5 : 1 : 1 : 2 of 1003 = 111.4, 222.9, 222.9, 445.8 -> 111, 223, 223, 446
    assert Counter(r["task"] for r in records) == {"color": 111, "shape": 223, "position": 223, "count": 446}
    for task in TASKS:
        answers = Counter(_answer(r) for r in records if r["task"] == task)
        assert set(answers) == set(ANSWERS[task]) and max(answers.values()) - min(answers.values()) <= 1
    meta = json.loads((tmp_path / "synth_meta.json").read_text())
    assert meta["train_task_weights"] == {"color": 0.5, "count": 2.0}, "weights of 1 are the default: not stored"
    same = generate_synthetic_vqa(tmp_path / "b", num_train=60, num_eval=4, seed=3, train_task_weights={"shape": 1})
    plain = generate_synthetic_vqa(tmp_path / "c", num_train=60, num_eval=4, seed=3)
    assert same.train.read_text() == plain.train.read_text().replace(str(tmp_path / "c"), str(tmp_path / "b"))
    with pytest.raises(ValueError, match="not among the tasks"):
        generate_synthetic_vqa(tmp_path, 4, 4, tasks=("color",), train_task_weights={"count": 2})
    with pytest.raises(ValueError, match="positive"):
        generate_synthetic_vqa(tmp_path, 4, 4, train_task_weights={"count": 0})


def test_task_subset_and_image_size(tmp_path: Path) -> None:
    paths = generate_synthetic_vqa(tmp_path, num_train=16, num_eval=4, image_size=48, seed=0, tasks=("count",))
    records = _load(paths.train)
    assert {r["task"] for r in records} == {"count"}
    assert Counter(_answer(r) for r in records) == Counter({c: 4 for c in COUNTS})
    for rec in records:
        arr = _image(paths, rec)
        assert arr.shape == (48, 48, 3)
        assert _components(_split(arr)[1]) == int(_answer(rec))


def test_count_of_many_small_shapes(tmp_path: Path) -> None:
    paths = generate_synthetic_vqa(tmp_path, num_train=36, num_eval=4, seed=1, tasks=("count",), max_count=9)
    records = _load(paths.train)
    assert Counter(_answer(r) for r in records) == Counter({str(c): 4 for c in range(1, 10)})
    cell = 64 // 3
    for rec in records:
        mask = _split(_image(paths, rec))[1]
        assert _components(mask) == int(_answer(rec)), rec["id"]  # separate shapes, one per grid cell
        cells = [mask[y * cell:(y + 1) * cell, x * cell:(x + 1) * cell].any() for y in range(3) for x in range(3)]
        assert sum(cells) == int(_answer(rec)), rec["id"]
    assert json.loads((paths.root / "synth_meta.json").read_text())["max_count"] == 9
    with pytest.raises(ValueError, match="max_count"):
        generate_synthetic_vqa(tmp_path, 2, 2, max_count=10)


def test_regeneration_removes_stale_images(tmp_path: Path) -> None:
    generate_synthetic_vqa(tmp_path, num_train=12, num_eval=6, seed=0)
    paths = generate_synthetic_vqa(tmp_path, num_train=5, num_eval=2, seed=0)
    assert len(list(paths.images.glob("train_*.png"))) == 5
    assert len(list(paths.images.glob("eval_*.png"))) == 2


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tasks"):
        generate_synthetic_vqa(tmp_path, 2, 2, tasks=("color", "size"))
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_vqa(tmp_path, 2, 2, image_size=16)
    with pytest.raises(ValueError):
        generate_synthetic_vqa(tmp_path, -1, 2)
    with pytest.raises(TypeError):
        generate_synthetic_vqa(tmp_path, 2, 2, tasks="color")
    with pytest.raises(ValueError, match="extra_train_questions"):
        generate_synthetic_vqa(tmp_path, 2, 2, extra_train_questions=("count",))
    with pytest.raises(TypeError, match="extra_train_questions"):
        generate_synthetic_vqa(tmp_path, 2, 2, extra_train_questions="shape")


def test_ensure_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    real = synth.generate_synthetic_vqa

    def counting(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(synth.dataset, "generate_synthetic_vqa", counting)
    out = tmp_path / "ds"
    first = ensure_synthetic_vqa(out, num_train=10, num_eval=4, seed=2)
    assert len(calls) == 1
    meta = json.loads((out / "synth_meta.json").read_text())
    assert meta["num_train"] == 10 and meta["num_eval"] == 4 and meta["seed"] == 2
    assert meta["tasks"] == list(TASKS) and meta["image_size"] == 64
    before = first.train.stat().st_mtime_ns

    again = ensure_synthetic_vqa(out, num_train=10, num_eval=4, seed=2, tasks=list(TASKS))
    assert again == first
    assert len(calls) == 1, "same arguments: nothing regenerated"
    assert first.train.stat().st_mtime_ns == before

    ensure_synthetic_vqa(out, num_train=10, num_eval=4, seed=3)
    assert len(calls) == 2, "different seed: regenerated"
    assert json.loads((out / "synth_meta.json").read_text())["seed"] == 3

    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3)
    assert len(calls) == 3 and len(_load(first.train)) == 11

    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3, extra_train_questions=["shape"])
    assert len(calls) == 4, "other extra_train_questions: regenerated"
    assert json.loads((out / "synth_meta.json").read_text())["extra_train_questions"] == ["shape"]
    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3)
    assert len(calls) == 5 and "extra_train_questions" not in json.loads((out / "synth_meta.json").read_text())
    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3, train_task_weights={"count": 2})
    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3, train_task_weights={"count": 2.0})
    assert len(calls) == 6, "other train_task_weights: regenerated once"
    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3)
    assert len(calls) == 7

    first.eval.unlink()
    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3)
    assert len(calls) == 8 and first.eval.is_file()

    (out / "synth_meta.json").write_text("{not json")
    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3)
    assert len(calls) == 9
    ensure_synthetic_vqa(out, num_train=11, num_eval=4, seed=3)
    assert len(calls) == 9


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Red", "red"),
        ("  Top   Left.\n", "top left"),
        ("bottom\tright!!", "bottom right"),
        ("3.", "3"),
        ("circle ?", "circle"),
        ("", ""),
        ("purple", "purple"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected
