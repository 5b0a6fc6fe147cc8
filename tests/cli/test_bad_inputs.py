"""A catalogue of bad configs and bad records, each run through the CLI entry ``mmfw.cli.main.main``.

Every case must end with exit code 2, exactly the expected ``error:`` lines on stderr (one per problem, naming the
YAML path, or the file, line, record id and reason) and no traceback. Config cases run ``mmfw data check`` (which
validates the config before reading any data) and a few run ``mmfw train``, which must stop before building anything.
"""

from __future__ import annotations

import copy
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from mmfw.cli.main import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert all(ln.startswith("error: ") for ln in lines), err  # nothing but one line per problem
    return [ln.removeprefix("error: ") for ln in lines]


def assert_lines(actual: list[str], expected: list[str]) -> None:
    """Every expected line is the start of exactly one actual line, and there is no other line."""
    assert len(actual) == len(expected), actual
    remaining = list(actual)
    for e in expected:
        match = [a for a in remaining if a.startswith(e)]
        assert match, f"no line starts with {e!r} in {actual}"
        remaining.remove(match[0])


# --- configs ---------------------------------------------------------------------------------------------------------
@dataclass
class ConfigCase:
    id: str
    mutate: Callable[[dict[str, Any], Path], None]
    expected: list[str]
    """Line starts, after ``"error: <config path>: "``; ``{tmp}`` is the test's temporary directory."""


def setp(path: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def mutate(cfg: dict[str, Any], tmp: Path) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        v = value(tmp) if callable(value) else value
        if isinstance(node, list):
            node[int(last)] = v
        else:
            node[last] = v

    return mutate


def delp(path: str) -> Callable[[dict[str, Any], Path], None]:
    def mutate(cfg: dict[str, Any], tmp: Path) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def both(*mutations: Callable[[dict[str, Any], Path], None]) -> Callable[[dict[str, Any], Path], None]:
    def mutate(cfg: dict[str, Any], tmp: Path) -> None:
        for m in mutations:
            m(cfg, tmp)

    return mutate


# The tiny model: a 32 px CLIP with 8 px patches (16 tokens per image with the MLP connector), an LLM with 128
# positions, data.max_length 96.
CONFIG_CASES = [
    ConfigCase("extra-top-level-key", setp("trainig", {"max_steps": 3}), ["trainig: unknown key"]),
    ConfigCase("misspelt-nested-key", setp("model.connector.detph", 3), ["model.connector.detph: unknown key"]),
    ConfigCase("unknown-type", setp("model.connector.type", "mlpp"),
               ["model.connector.type: unknown type 'mlpp'; did you mean 'mlp'? valid choices: 'mlp', "]),
    ConfigCase("missing-type", delp("model.image_strategy.type"),
               ["model.image_strategy.type: missing 'type' (the component to use)"]),
    ConfigCase("wrong-value-type", setp("training.batch_size", "eight"),
               ["training.batch_size: Input should be a valid integer"]),
    ConfigCase("list-expected", setp("data.train", "train.json"), ["data.train: Input should be a valid list"]),
    ConfigCase("non-positive-max-length", setp("data.max_length", 0),
               ["data.max_length: Input should be greater than 0"]),
    ConfigCase("unknown-on-error", setp("data.on_error", "ignore"),
               ["data.on_error: Input should be 'raise' or 'skip'"]),
    ConfigCase("unknown-truncation", setp("data.truncation", "middle"),
               ["data.truncation: Input should be 'drop-sample', 'drop-turns' or 'cut-text'"]),
    ConfigCase("skip-ratio-above-one", setp("data.max_skip_ratio", 1.5),
               ["data.max_skip_ratio: Input should be less than or equal to 1"]),
    ConfigCase("dataset-extra-key", setp("data.train.0.shuffle", True), ["data.train[0].shuffle: unknown key"]),
    ConfigCase("dataset-wrong-suffix", setp("data.train.0.path", "data/train.csv"),
               ["data.train[0].path: 'data/train.csv': unsupported dataset file type '.csv'; expected .json, .jsonl, "
                ".tar (or a dataset directory)"]),
    ConfigCase("dataset-missing-file", setp("data.train.0.path", lambda t: str(t / "nope.jsonl")),
               ["data.train[0].path: file not found: {tmp}/nope.jsonl"]),
    ConfigCase("dataset-path-is-a-directory", setp("data.eval.0.path", lambda t: str(t / "dir.json")),
               ["data.eval[0].path: not a file: {tmp}/dir.json"]),
    ConfigCase("image-root-missing", setp("data.eval.0.image_root", lambda t: str(t / "imgs")),
               ["data.eval[0].image_root: directory not found: {tmp}/imgs"]),
    ConfigCase("max-length-below-image-tokens", setp("data.max_length", 12),
               ["data.max_length: 12 leaves no room for text: one image becomes up to 16 tokens "
                "(model.image_strategy 'resize' with this encoder and connector)"]),
    ConfigCase("max-length-above-llm-positions", setp("data.max_length", 200),
               ["data.max_length: 200 exceeds the LLM's maximum sequence length 128 "
                "(model.llm.architecture.max_position_embeddings)"]),
    ConfigCase("llm-positions-below-image-tokens", setp("model.llm.architecture.max_position_embeddings", 12),
               ["model.llm.architecture.max_position_embeddings: the LLM's maximum sequence length 12 is smaller "
                "than one image's tokens (up to 16 with model.image_strategy 'resize')",
                "data.max_length: 96 exceeds the LLM's maximum sequence length 12"]),
    ConfigCase("anyres-pinpoint-not-a-tile-multiple",
               setp("model.image_strategy", {"type": "anyres", "grid_pinpoints": [[64, 64], [48, 64]]}),
               ["model.image_strategy.grid_pinpoints[1]: [48, 64] is not a multiple of the encoder's native size "
                "[32, 32] (the tile size)"]),
    ConfigCase("anyres-max-tiles-excludes-all",
               setp("model.image_strategy", {"type": "anyres", "grid_pinpoints": [[64, 64]], "max_tiles": 1}),
               ["model.image_strategy.max_tiles: 1 excludes every grid pinpoint"]),
    ConfigCase("anyres-too-many-tokens-for-max-length",
               setp("model.image_strategy", {"type": "anyres", "grid_pinpoints": [[64, 96]], "merge": "flat"}),
               ["data.max_length: 96 leaves no room for text: one image becomes up to 112 tokens "
                "(model.image_strategy 'anyres'"]),
    ConfigCase("identity-connector-width-mismatch", setp("model.connector", {"type": "identity"}),
               ["model.connector: identity connector: the vision encoder's width (32) must equal the LLM hidden "
                "size (48)"]),
    ConfigCase("resampler-queries-not-square", setp("model.connector", {"type": "resampler", "num_queries": 10}),
               ["model.connector.num_queries: num_queries must be a perfect square"]),
    ConfigCase("resize-size-differs-from-fixed-encoder", setp("model.image_strategy.size", 48),
               ["model.image_strategy: image_strategy.size 48 differs from the encoder's fixed input size"]),
    ConfigCase("clip-feature-layer-out-of-range", setp("model.vision_encoder.feature_layer", 9),
               ["model.vision_encoder: feature_layer 9 out of range for 2 layers"]),
    ConfigCase("llm-heads-do-not-divide", setp("model.llm.architecture.num_attention_heads", 5),
               ["model.llm.architecture: hidden_size 48 is not divisible by num_attention_heads 5"]),
    ConfigCase("llm-two-sources", setp("model.llm.pretrained", "some/model"),
               ["model.llm: set exactly one of 'pretrained' (weights) and 'architecture' (random init)"]),
    ConfigCase("tokenizer-directory-missing", setp("model.llm.tokenizer", lambda t: str(t / "no" / "tokenizer")),
               ["model.llm.tokenizer: not found: {tmp}/no/tokenizer (neither a local path nor a Hugging Face hub "
                "id)"]),
    ConfigCase("lora-target-matches-no-module",
               setp("training.policy.llm", {"type": "lora", "r": 4, "target_modules": ["q_proj", "qkv_proj"]}),
               ["training.policy.llm.target_modules[1]: 'qkv_proj' matches no module"]),
    ConfigCase("policy-submodule-does-not-exist", setp("training.policy.modules", {"llm.model.lm_heed": "full"}),
               ["training.policy.modules.llm.model.lm_heed: no such sub-module; children of 'llm.model': model, "
                "lm_head"]),
    ConfigCase("negative-learning-rate", setp("training.learning_rate", -1.0),
               ["training.learning_rate: Input should be greater than 0"]),
    ConfigCase("several-problems-at-once",
               both(setp("data.max_length", 200), setp("data.train.0.path", lambda t: str(t / "a.json")),
                    setp("model.connector.detph", 3)),
               ["model.connector.detph: unknown key"]),  # schema errors first; the rest after they are fixed
    ConfigCase("several-semantic-problems-at-once",
               both(setp("data.max_length", 200), setp("data.train.0.path", lambda t: str(t / "a.json"))),
               ["data.train[0].path: file not found: {tmp}/a.json",
                "data.max_length: 200 exceeds the LLM's maximum sequence length 128"]),
]


def write_config(cfg: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_bad_config(case: ConfigCase, tiny_experiment: dict, tmp_path: Path, capsys) -> None:
    (tmp_path / "dir.json").mkdir()
    cfg = copy.deepcopy(tiny_experiment)
    case.mutate(cfg, tmp_path)
    path = write_config(cfg, tmp_path)
    code, out, err = run(["data", "check", str(path)], capsys)
    assert code == 2 and "Traceback" not in err and out == ""
    prefix = f"{path}: "
    lines = error_lines(err)
    assert all(ln.startswith(prefix) for ln in lines), lines
    assert_lines([ln.removeprefix(prefix) for ln in lines], [e.format(tmp=tmp_path) for e in case.expected])


@pytest.mark.parametrize("case", [c for c in CONFIG_CASES if c.id in (
    "max-length-below-image-tokens", "anyres-pinpoint-not-a-tile-multiple", "dataset-missing-file")],
    ids=lambda c: c.id)
def test_train_validates_before_building_anything(case: ConfigCase, tiny_experiment: dict, tmp_path: Path,
                                                  capsys) -> None:
    cfg = copy.deepcopy(tiny_experiment)
    case.mutate(cfg, tmp_path)
    path = write_config(cfg, tmp_path)
    code, _, err = run(["train", str(path)], capsys)
    assert code == 2 and "Traceback" not in err
    assert_lines([ln.removeprefix(f"{path}: ") for ln in error_lines(err)],
                 [e.format(tmp=tmp_path) for e in case.expected])
    assert not (tmp_path / "run").exists()


def test_unreadable_config_files(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  connector: [unclosed\n", encoding="utf-8")
    code, _, err = run(["data", "check", str(bad)], capsys)
    assert code == 2 and "Traceback" not in err
    [line] = error_lines(err)
    assert line.startswith(f"{bad}: line 3, column 1: invalid YAML")
    code, _, err = run(["data", "check", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and error_lines(err) == [f"config file not found: {tmp_path / 'missing.yaml'}"]


def test_debug_shows_the_traceback(tiny_experiment: dict, tmp_path: Path) -> None:
    cfg = copy.deepcopy(tiny_experiment)
    cfg["data"]["max_length"] = 12
    from mmfw.config import ConfigError

    with pytest.raises(ConfigError, match="data.max_length: 12 leaves no room"):
        main(["--debug", "data", "check", str(write_config(cfg, tmp_path))])


# --- records ---------------------------------------------------------------------------------------------------------
def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": f, "value": v} for f, v in pairs]


QA = turns(("human", "<image>\nWhat is the color of the shape?"), ("gpt", "red"))


def rec(rid: str, image: Any = "ok.png", conversations: Any = None, **extra: Any) -> str:
    record = {"id": rid, **({"image": image} if image is not None else {}),
              "conversations": QA if conversations is None else conversations, **extra}
    return json.dumps(record)


@dataclass
class RecordCase:
    id: str
    line: bytes | str
    reason: str
    message: str
    """Start of the message after ``[reason] `` (``{tmp}``: the data directory)."""
    data: dict[str, Any] | None = None
    """Overrides of the ``data`` section."""


RECORD_CASES = [
    RecordCase("malformed-json", "{\"id\": \"x\", ", "bad-json", "invalid JSON"),
    RecordCase("non-utf8", b'{"id": "caf\xe9", "conversations": []}', "bad-json", "line is not valid UTF-8"),
    RecordCase("not-an-object", "[1, 2]", "not-an-object", "expected a JSON object, got list"),
    RecordCase("no-conversations", json.dumps({"id": "r-noconv", "image": "ok.png"}), "missing-conversations",
               "record 'r-noconv' has no 'conversations' list"),
    RecordCase("empty-conversation", rec("r-empty", conversations=[]), "empty-conversation",
               "record 'r-empty' has no turns"),
    RecordCase("starts-with-assistant", rec("r-gpt-first", None, turns(("gpt", "red"), ("human", "ok?"))),
               "starts-with-assistant", "record 'r-gpt-first': the first turn after the optional system turn"),
    RecordCase("roles-not-alternating", rec("r-alt", conversations=turns(
        ("human", "<image>\nQ"), ("human", "Q2"), ("gpt", "red"))), "roles-not-alternating",
               "record 'r-alt': turns 0 and 1 are both 'user'"),
    RecordCase("no-assistant-reply", rec("r-noreply", conversations=turns(("human", "<image>\nQ"))),
               "no-assistant-reply", "record 'r-noreply' has no assistant reply"),
    RecordCase("ends-with-user", rec("r-tail", conversations=turns(("human", "<image>\nQ"), ("gpt", "red"),
                                                                   ("human", "and?"))),
               "ends-with-user", "record 'r-tail': the last turn is a user turn"),
    RecordCase("empty-reply", rec("r-blank", conversations=turns(("human", "<image>\nQ"), ("gpt", "  "))),
               "empty-reply", "record 'r-blank': assistant turn 1 is empty"),
    RecordCase("unknown-role", rec("r-role", conversations=turns(("robot", "<image>\nQ"), ("gpt", "red"))),
               "bad-role", "record 'r-role': turn 0 has role 'robot'"),
    RecordCase("bad-turn", rec("r-turn", conversations=[{"from": "human"}, {"from": "gpt", "value": "red"}]),
               "bad-turn", "record 'r-turn': turn 0 needs 'from'/'value'"),
    RecordCase("more-placeholders-than-images", rec("r-2ph", conversations=turns(
        ("human", "<image><image>\nQ"), ("gpt", "red"))), "image-placeholder-mismatch",
               "record 'r-2ph' has 1 image(s) but 2 '<image>' placeholder(s)"),
    RecordCase("placeholder-without-image", rec("r-noimg", None), "image-placeholder-mismatch",
               "record 'r-noimg' has 0 image(s) but 1 '<image>' placeholder(s)"),
    RecordCase("image-in-reply", rec("r-inreply", conversations=turns(("human", "Q"), ("gpt", "<image> red"))),
               "image-in-reply", "record 'r-inreply': assistant turn 1 contains '<image>'"),
    RecordCase("image-field-not-a-path", rec("r-imgint", 3), "bad-image",
               "record 'r-imgint': 'image(s)' must be a string or a list of strings"),
    RecordCase("missing-image", rec("r-missing", "gone.png"), "missing-image",
               "record 'r-missing': image file not found: '{tmp}/gone.png'"),
    RecordCase("zero-byte-image", rec("r-zero", "zero.png"), "empty-image",
               "record 'r-zero': image file '{tmp}/zero.png' is empty (0 bytes)"),
    RecordCase("not-an-image", rec("r-junk", "junk.png"), "corrupt-image",
               "record 'r-junk': cannot decode image '{tmp}/junk.png'"),
    RecordCase("truncated-image", rec("r-trunc", "half.png"), "corrupt-image",
               "record 'r-trunc': cannot decode image '{tmp}/half.png': image file is truncated"),
    RecordCase("zero-width-png", rec("r-w0", "w0.png"), "corrupt-image", "record 'r-w0': cannot decode image"),
    RecordCase("too-long", rec("r-long", conversations=turns(("human", "<image>\n" + "What is the shape? " * 30),
                                                             ("gpt", "red"))),
               "too-long", "sample 'r-long' has ", {"truncation": "drop-sample"}),
    RecordCase("too-long-first-turn", rec("r-long2", conversations=turns(
        ("human", "<image>\n" + "What is the shape? " * 30), ("gpt", "red"))), "too-long",
               "sample 'r-long2' has ", {"truncation": "drop-turns"}),
    RecordCase("truncation-removes-every-reply", rec("r-nosup", conversations=turns(
        ("human", "<image>\n" + "What is the shape? " * 30), ("gpt", "red"))), "no-supervised-tokens",
               "sample 'r-nosup' has no supervised token after truncation to 96 tokens (cut-text)",
               {"truncation": "cut-text"}),
]


def make_images(d: Path) -> None:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(d / "ok.png")
    (d / "zero.png").write_bytes(b"")
    (d / "junk.png").write_bytes(b"this is not an image")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noise.save(d / "full.png")
    data = (d / "full.png").read_bytes()
    (d / "half.png").write_bytes(data[:len(data) // 2])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0))  # width 0
    (d / "w0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    # modes that must be converted, not rejected
    Image.new("L", (20, 10), 90).save(d / "grey.png")
    Image.new("RGBA", (10, 20), (0, 0, 255, 128)).save(d / "rgba.png")
    Image.new("P", (16, 16), 3).save(d / "palette.png")
    Image.new("CMYK", (16, 16), (0, 255, 0, 0)).save(d / "cmyk.jpg")
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(d / "grey16.png")
    Image.new("1", (16, 16), 1).save(d / "bw.png")


def data_experiment(tiny: dict, tmp_path: Path, lines: list[bytes | str], **data: Any) -> Path:
    d = tmp_path / "d"
    d.mkdir(exist_ok=True)
    make_images(d)
    raw = b"\n".join(x.encode("utf-8") if isinstance(x, str) else x for x in lines) + b"\n"
    (d / "train.jsonl").write_bytes(raw)
    cfg = copy.deepcopy(tiny)
    cfg["data"] = {"train": [{"path": str(d / "train.jsonl")}], "max_length": 96, **data}
    return write_config(cfg, tmp_path)


GOOD = [rec("good-1"), rec("good-2", conversations=turns(("human", "What is it? <image>"), ("gpt", "red"),
                                                         ("human", "Sure?"), ("gpt", "yes")))]


@pytest.mark.parametrize("case", RECORD_CASES, ids=[c.id for c in RECORD_CASES])
def test_bad_record(case: RecordCase, tiny_experiment: dict, tmp_path: Path, capsys) -> None:
    path = data_experiment(tiny_experiment, tmp_path, [GOOD[0], case.line, GOOD[1]], **(case.data or {}))
    code, out, err = run(["data", "check", str(path)], capsys)
    assert code == 2 and "Traceback" not in err
    d = tmp_path / "d"
    [line] = error_lines(err)
    location = f"data.train: {d / 'train.jsonl'}:2: [{case.reason}] "
    assert line.startswith(location + case.message.format(tmp=d)), line
    assert "data.train: 3 records, 2 usable, 1 with problems" in out and f"{case.reason}: 1" in out


def test_mixed_dataset_lists_every_bad_record_and_nothing_else(tiny_experiment: dict, tmp_path: Path,
                                                               capsys) -> None:
    bad = [c for c in RECORD_CASES if not c.data]
    good = [rec(f"ok-{m}", m) for m in ("ok.png", "grey.png", "rgba.png", "palette.png", "cmyk.jpg", "grey16.png",
                                        "bw.png")] + GOOD
    lines: list[bytes | str] = []
    for i in range(max(len(good), len(bad))):
        lines += ([good[i]] if i < len(good) else []) + ([bad[i].line] if i < len(bad) else [])
    path = data_experiment(tiny_experiment, tmp_path, lines)
    code, out, err = run(["data", "check", str(path), "--split", "train"], capsys)
    assert code == 2 and "Traceback" not in err
    d = tmp_path / "d"
    found = {}
    for line in error_lines(err):
        location, _, rest = line.removeprefix(f"data.train: {d / 'train.jsonl'}:").partition(": ")
        found[int(location)] = rest
    expected = {lines.index(c.line) + 1: f"[{c.reason}] {c.message.format(tmp=d)}" for c in bad}
    assert sorted(found) == sorted(expected)
    for lineno, start in expected.items():
        assert found[lineno].startswith(start), (found[lineno], start)
    assert f"data.train: {len(lines)} records, {len(good)} usable, {len(bad)} with problems" in out
    # the well-formed records only: nothing is flagged
    path = data_experiment(tiny_experiment, tmp_path, good)
    code, out, err = run(["data", "check", str(path)], capsys)
    assert code == 0 and err == "" and f"data.train: {len(good)} records, {len(good)} usable" in out


def test_show_a_skipped_sample(tiny_experiment: dict, tmp_path: Path, capsys) -> None:
    path = data_experiment(tiny_experiment, tmp_path, [GOOD[0], rec("r-missing", "gone.png")])
    code, out, err = run(["data", "show", str(path), "--index", "1"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    [line] = error_lines(err)
    assert line.startswith(f"data.train: {tmp_path / 'd' / 'train.jsonl'}:2: [missing-image] record 'r-missing'")
    code, _, err = run(["data", "show", str(path), "--index", "7"], capsys)
    assert code == 2 and error_lines(err) == ["--index 7 is out of range: data.train has 2 usable samples"]
    code, _, err = run(["data", "show", str(path), "--id", "nope"], capsys)
    assert code == 2 and error_lines(err)[0].startswith("data.train: no usable record with id 'nope'")


@pytest.mark.parametrize(("lines", "data", "expected"), [
    ([GOOD[0], rec("r-missing", "gone.png"), GOOD[1]], {"on_error": "raise"},
     "[missing-image] {d}/train.jsonl:2: record 'r-missing': image file not found: '{d}/gone.png'"),
    ([GOOD[0], "{oops", GOOD[1]], {"on_error": "raise"}, "[bad-json] {d}/train.jsonl:2: invalid JSON"),
    ([GOOD[0], rec("r-missing", "gone.png"), rec("r-junk", "junk.png")], {"max_skip_ratio": 0.5},
     "data.train: 2 of 3 samples (66.7%) are unusable, more than data.max_skip_ratio=0.5: corrupt-image: 1 "
     "('r-junk'), missing-image: 1 ('r-missing')"),
], ids=["raise-on-missing-image", "raise-on-bad-json", "too-many-skipped"])
def test_train_stops_on_bad_data_with_one_line(lines: list[str], data: dict, expected: str, tiny_experiment: dict,
                                               tmp_path: Path, capsys) -> None:
    path = data_experiment(tiny_experiment, tmp_path, lines, **data)
    code, _, err = run(["train", str(path), "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    [line] = error_lines(err)
    assert line.startswith(expected.format(d=tmp_path / "d")), line


def test_unreadable_json_file(tiny_experiment: dict, tmp_path: Path, capsys) -> None:
    path = data_experiment(tiny_experiment, tmp_path, [GOOD[0]])
    cfg = yaml.safe_load(path.read_text())
    broken = tmp_path / "d" / "broken.json"
    broken.write_text('[{"id": "a"', encoding="utf-8")
    cfg["data"]["train"] = [{"path": str(broken)}]
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    code, _, err = run(["data", "check", str(path)], capsys)
    assert code == 2 and "Traceback" not in err
    assert error_lines(err) == [f"[bad-json] data.train[0].path: {broken}: invalid JSON (Expecting ',' delimiter, "
                                "line 1 column 12)"]
