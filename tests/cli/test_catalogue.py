"""The failure catalogue: every command, given bad input, fails with exit code 2 and one located line per problem;
an internal error is exit code 1 and says to rerun with ``--debug``; no traceback without ``--debug``.

Each case builds its input in a temporary directory, runs the real CLI (in this process; the cases that need a real
process are in ``test_catalogue_faults.py``) and asserts the exit code, the location named in the message (YAML
path, file:line, record id, run directory, plugin name) and that no traceback is printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.catalogue_utils import assert_fails, assert_ok, cli, set_path, write_config


@dataclass
class Ctx:
    tmp: Path
    base: dict[str, Any]
    data_dir: Path
    tokenizer: Path

    def config(self, cfg: dict[str, Any] | None = None, name: str = "exp.yaml") -> Path:
        return write_config(self.tmp / name, self.base if cfg is None else cfg)

    def with_(self, *pairs: Any) -> Path:
        cfg = self.base
        for dotted, value in zip(pairs[::2], pairs[1::2], strict=True):
            cfg = set_path(cfg, dotted, value)
        return self.config(cfg)

    def file(self, name: str, content: str | bytes = "") -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
        return p

    def jsonl(self, name: str, records: list[Any]) -> Path:
        return self.file(name, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


@pytest.fixture
def ctx(tiny_experiment: dict[str, Any], synth_data: Any, tokenizer_dir: Path, tmp_path: Path) -> Ctx:
    base = dict(tiny_experiment)
    base["training"] = {**base["training"], "trackers": []}
    return Ctx(tmp_path, base, Path(synth_data.train).parent, tokenizer_dir)


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[Any]]
    fragments: tuple[str, ...]
    code: int = 2
    env: dict[str, str] | None = None

    def __str__(self) -> str:
        return self.id


def check(cmd: str = "data check") -> Callable[[Path], list[Any]]:
    return lambda path: [*cmd.split(), path]


def record(text: str = "What colour?", reply: str = "red", **extra: Any) -> dict[str, Any]:
    rec = {"id": "r0", "conversations": [{"from": "human", "value": f"<image>\n{text}"},
                                         {"from": "gpt", "value": reply}], "image": "x.png"}
    rec.update(extra)
    return rec


# --- YAML and config files ------------------------------------------------------------------------------------------
def _dup_keys(c: Ctx) -> list[Any]:
    text = yaml.safe_dump(c.base, sort_keys=False) + "seed: 3\n"
    return ["data", "check", c.file("dup.yaml", text)]


def _dup_nested(c: Ctx) -> list[Any]:
    text = yaml.safe_dump(c.base, sort_keys=False).replace("  max_steps: 4\n", "  max_steps: 4\n  max_steps: 5\n")
    return ["data", "check", c.file("dup.yaml", text)]


def _bomb(c: Ctx) -> list[Any]:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return ["data", "check", c.file("bomb.yaml", "\n".join(lines) + "\n")]


def _extends(target: Callable[[Ctx], str]) -> Callable[[Ctx], list[Any]]:
    def make(c: Ctx) -> list[Any]:
        return ["data", "check", c.file("child.yaml", f"extends: {target(c)}\nseed: 1\n")]

    return make


YAML_CASES = [
    Case("config-is-a-directory", lambda c: ["data", "check", c.tmp], ("is a directory",)),
    Case("config-not-utf8", lambda c: ["data", "check", c.file("bad.yaml", b"name: caf\xe9\nseed: 0\n")],
         ("bad.yaml", "line 1", "not valid UTF-8")),
    Case("config-binary-garbage", lambda c: ["inspect", c.file("bin.yaml", bytes(range(256)))],
         ("bin.yaml", "not valid UTF-8")),
    Case("config-duplicate-top-key", _dup_keys, ("dup.yaml", "duplicate key 'seed'", "first on line 2, again on line")),
    Case("config-duplicate-nested-key", _dup_nested, ("duplicate key 'max_steps'",)),
    Case("config-alias-bomb", _bomb, ("bomb.yaml", "alias")),
    Case("config-python-tag", lambda c: ["data", "check", c.file("t.yaml", "name: !!python/object/apply:os.system [ls]\n")],
         ("t.yaml", "invalid YAML")),
    Case("config-top-level-list", lambda c: ["data", "check", c.file("l.yaml", "- 1\n- 2\n")],
         ("l.yaml", "top level must be a mapping")),
    Case("config-tab-indent", lambda c: ["data", "check", c.file("tab.yaml", "model:\n\tllm: 1\n")],
         ("tab.yaml", "line 2", "invalid YAML")),
    Case("extends-is-a-directory", _extends(lambda c: str(c.tmp)), ("extends", "is a directory")),
    Case("extends-missing", _extends(lambda c: "nope.yaml"), ("config file not found", "nope.yaml")),
    Case("extends-not-utf8", _extends(lambda c: str(c.file("p.yaml", b"seed: \xff\n"))), ("p.yaml", "UTF-8")),
    Case("extends-circular", lambda c: ["data", "check", c.file("child.yaml", "extends: child.yaml\n")],
         ("circular inheritance",)),
    Case("extends-wrong-type", lambda c: ["data", "check", c.file("child.yaml", "extends: {a: 1}\n")],
         ("extends: must be a file path",)),
    Case("config-empty-file", lambda c: ["data", "check", c.file("empty.yaml", "")], ("model: required key",)),
    Case("config-missing-file", lambda c: ["inspect", c.tmp / "none.yaml"], ("config file not found",)),
]


# --- values ---------------------------------------------------------------------------------------------------------
def value_case(id: str, dotted: str, value: Any, *fragments: str, cmd: str = "data check") -> Case:
    return Case(id, lambda c: [*cmd.split(), c.with_(dotted, value)], fragments or (dotted,))


VALUE_CASES = [
    value_case("lr-inf", "training.learning_rate", float("inf"), "training.learning_rate", "finite"),
    value_case("lr-nan", "training.learning_rate", float("nan"), "training.learning_rate", "finite"),
    value_case("lr-nan-train", "training.learning_rate", float("nan"), "training.learning_rate", cmd="train"),
    value_case("epochs-inf", "training.epochs", float("inf"), "training.epochs"),
    value_case("weight-decay-nan", "training.weight_decay", float("nan"), "training.weight_decay"),
    value_case("grad-norm-inf", "training.max_grad_norm", float("inf"), "training.max_grad_norm"),
    value_case("beta1-one", "training.betas", [1.0, 0.999], "training.betas", "[0, 1)"),
    value_case("beta2-negative", "training.betas", [0.9, -0.1], "training.betas"),
    value_case("beta-above-one-train", "training.betas", [0.9, 1.5], "training.betas", cmd="train"),
    value_case("lr-scale-inf", "training.policy.connector", {"type": "full", "lr_scale": float("inf")},
               "training.policy.connector"),
    value_case("skip-ratio-nan", "data.max_skip_ratio", float("nan"), "data.max_skip_ratio"),
    value_case("patch-larger-than-image", "model.vision_encoder.architecture.patch_size", 64,
               "model.vision_encoder", "patch"),
    value_case("llm-extra-unknown-key-check", "model.llm.architecture.extra", {"no_such_option": 1},
               "model.llm.architecture.extra", "no_such_option"),
    value_case("llm-extra-unknown-key-inspect", "model.llm.architecture.extra", {"no_such_option": 1},
               "no_such_option", cmd="inspect"),
    value_case("synthetic-image-size-small", "data.synthetic", {"out_dir": "x", "image_size": 8},
               "data.synthetic.image_size"),
    value_case("synthetic-image-below-generator-minimum", "data.synthetic", {"out_dir": "x", "image_size": 20, "num_train": 3,
                                                                      "num_eval": 1, "tasks": ["count"]},
               "data.synthetic.image_size"),
    value_case("max-steps-zero", "training.max_steps", 0, "training.max_steps"),
    value_case("stage-lr-nan", "stages", [{"name": "a", "learning_rate": float("nan")}], "stages[0]"),
]


# --- command-line flags that bypass the schema ------------------------------------------------------------------
FLAG_CASES = [
    Case("synth-num-train-zero", lambda c: ["data", "synth", "--out", c.tmp / "s", "--num-train", "0"],
         ("--num-train",)),
    Case("synth-num-eval-negative", lambda c: ["data", "synth", "--out", c.tmp / "s", "--num-eval", "-3"],
         ("--num-eval",)),
    Case("synth-image-size-tiny", lambda c: ["data", "synth", "--out", c.tmp / "s", "--image-size", "4"],
         ("--image-size",)),
    Case("synth-weight-zero", lambda c: ["data", "synth", "--out", c.tmp / "s", "--train-task-weights", "count=0"],
         ("count",)),
    Case("synth-out-is-a-file", lambda c: ["data", "synth", "--out", c.file("f.txt", "x"), "--num-train", "2",
                                           "--num-eval", "1"], ("f.txt", "not a directory")),
    Case("check-limit-negative", lambda c: ["data", "check", c.config(), "--limit", "-1"], ("--limit",)),
    Case("check-limit-zero", lambda c: ["data", "check", c.config(), "--limit", "0"], ("--limit",)),
    Case("show-index-out-of-range", lambda c: ["data", "show", c.config(), "--index", "100000"], ("--index 100000",)),
    Case("show-unknown-id", lambda c: ["data", "show", c.config(), "--id", "nope"], ("no usable record with id",)),
    Case("train-num-processes-zero", lambda c: ["train", c.config(), "--num-processes", "0"], ("--num-processes",)),
    Case("train-resume-and-overwrite", lambda c: ["train", c.config(), "--resume", "--overwrite"], ("exclude",)),
    Case("inspect-bad-image-size", lambda c: ["inspect", c.config(), "--image-size", "0x5"], ("WIDTHxHEIGHT",)),
    Case("generate-max-new-tokens-zero", lambda c: ["generate", c.tmp, "--prompt", "hi", "--max-new-tokens", "0"],
         ("--max-new-tokens",)),
    Case("list-unknown-kind", lambda c: ["list", "conectors"], ("unknown kind", "connectors")),
    Case("schema-output-is-a-directory", lambda c: ["schema", "-o", c.tmp], ("is a directory",)),
    Case("schema-output-below-a-file", lambda c: ["schema", "-o", c.file("f.txt", "x") / "s.json"],
         ("f.txt", "cannot write")),
]


# --- overrides ------------------------------------------------------------------------------------------------------
OVERRIDE_CASES = [
    Case("set-list-index-out-of-range", lambda c: ["data", "check", c.config(), "--set", "data.train.5.path=x.json"],
         ("data.train.5", "out of range")),
    Case("set-list-index-not-a-number", lambda c: ["data", "check", c.config(), "--set", "data.train.first.path=x"],
         ("data.train.first", "list index")),
    Case("set-list-item-takes-effect", lambda c: ["data", "check", c.config(), "--set",
                                                   f"data.train.0.path={c.tmp / 'elsewhere.json'}"],
         ("data.train[0].path: file not found", "elsewhere.json")),
    Case("set-below-a-scalar", lambda c: ["data", "check", c.config(), "--set", "seed.x=1"],
         ("seed.x", "not a mapping")),
    Case("set-no-equals", lambda c: ["data", "check", c.config(), "--set", "seed"], ("expected KEY.PATH=VALUE",)),
    Case("set-empty-part", lambda c: ["data", "check", c.config(), "--set", "training..lr=1"],
         ("expected KEY.PATH=VALUE",)),
    Case("set-unknown-key", lambda c: ["data", "check", c.config(), "--set", "training.learnin_rate=1"],
         ("training.learnin_rate: unknown key",)),
    Case("set-inf", lambda c: ["data", "check", c.config(), "--set", "training.learning_rate=.inf"],
         ("training.learning_rate",)),
]


# --- paths and files ------------------------------------------------------------------------------------------------
def _fresh(c: Ctx) -> Path:
    """A config like configs/quickstart.yaml on a fresh clone: data and tokenizer are generated by training."""
    gen = c.tmp / "gen"
    cfg = set_path(c.base, "model.llm.tokenizer", str(gen / "tokenizer"))
    cfg = set_path(cfg, "data", {"synthetic": {"out_dir": str(gen), "num_train": 8, "num_eval": 2, "image_size": 32},
                                 "build_tokenizer": {"out_dir": str(gen / "tokenizer"), "vocab_size": 300},
                                 "train": [{"path": str(gen / "train.json")}], "eval": [{"path": str(gen / "eval.json")}],
                                 "max_length": 96})
    return c.config(cfg)


def test_fresh_clone_prepare_then_check(ctx: Ctx) -> None:
    config = _fresh(ctx)
    assert_ok(cli(["data", "check", config, "--prepare"]), "data.train: 8 records")
    assert_ok(cli(["data", "show", config, "--index", "0"]), "supervised tokens")
    assert_ok(cli(["inspect", config]))


def _empty_pretrained(c: Ctx) -> list[Any]:
    (c.tmp / "empty").mkdir()
    cfg = set_path(c.base, "model.llm", {"type": "llama", "pretrained": str(c.tmp / "empty")})
    return ["data", "check", c.config(cfg)]


def _pickle_only_pretrained(c: Ctx) -> list[Any]:
    d = c.tmp / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    cfg = set_path(c.base, "model.llm", {"type": "llama", "pretrained": str(d), "tokenizer": str(c.tokenizer)})
    return ["train", c.config(cfg)]


def _remote_code(c: Ctx) -> list[Any]:
    d = c.tmp / "remote"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "my-model", "auto_map": {
        "AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyModel"}}))
    cfg = set_path(c.base, "model.llm", {"type": "llama", "pretrained": str(d), "tokenizer": str(c.tokenizer)})
    return ["train", c.config(cfg)]


def _hub_offline(c: Ctx) -> list[Any]:
    cfg = set_path(c.base, "model.llm", {"type": "llama", "pretrained": "nobody-here/not-cached-model-123",
                                         "tokenizer": str(c.tokenizer)})
    return ["train", c.config(cfg)]


PATH_CASES = [
    Case("output-dir-is-a-file", lambda c: ["train", c.with_("output_dir", str(c.file("run.txt", "x")))],
         ("output_dir", "run.txt", "not a directory")),
    Case("output-dir-below-a-file", lambda c: ["train", c.with_("output_dir", str(c.file("f.txt", "x") / "run"))],
         ("output_dir", "f.txt")),
    Case("tokenizer-is-a-file", lambda c: ["data", "check", c.with_("model.llm.tokenizer", str(c.file("tok.json", "{}")))],
         ("model.llm.tokenizer", "tok.json", "not a directory")),
    Case("tokenizer-dir-empty", lambda c: ["data", "check", c.with_("model.llm.tokenizer", str(c.tmp))],
         ("model.llm.tokenizer", "no tokenizer")),
    Case("tokenizer-dir-empty-inspect", lambda c: ["inspect", c.with_("model.llm.tokenizer", str(c.tmp))],
         ("model.llm.tokenizer",)),
    Case("pretrained-dir-empty", _empty_pretrained, ("model.llm.pretrained", "config.json")),
    Case("pretrained-pickle-only", _pickle_only_pretrained, ("model.llm.pretrained", "pickle", "safetensors")),
    Case("pretrained-remote-code", _remote_code, ("model.llm.pretrained", "trust_remote_code")),
    Case("hub-id-not-cached-offline", _hub_offline, ("model.llm.pretrained", "not-cached-model-123", "offline"),
         env={"HF_HUB_OFFLINE": "1"}),
    Case("image-root-is-a-file", lambda c: ["data", "check", c.with_("data.train.0.image_root", str(c.file("f", "x")))],
         ("data.train[0].image_root: not a directory",)),
    Case("generate-run-dir-missing", lambda c: ["generate", c.tmp / "nope", "--prompt", "hi"], ("nope",)),
    Case("generate-run-dir-empty", lambda c: ["generate", c.tmp, "--prompt", "hi"], ("neither a model directory",)),
    Case("export-run-dir-empty", lambda c: ["export", c.tmp, c.tmp / "out"], ("neither a model directory",)),
    Case("merge-run-dir-empty", lambda c: ["merge", c.tmp, c.tmp / "out"], ("neither a model directory",)),
    Case("train-run-dir-without-config", lambda c: ["train", c.tmp], ("without config.yaml",)),
    Case("generate-device-cuda-without-one", lambda c: ["generate", c.tmp, "--prompt", "hi", "--device", "cuda:7"],
         ("--device cuda:7",)),
    Case("generate-device-not-a-device", lambda c: ["generate", c.tmp, "--prompt", "hi", "--device", "gpu0"],
         ("--device gpu0", "not a device name")),
    Case("generate-image-missing", lambda c: ["generate", c.tmp, "--prompt", "hi", "--image", c.tmp / "no.png"],
         ("--image", "no.png", "file not found")),
    Case("export-target-is-a-file", lambda c: ["export", c.tmp, c.file("out.txt", "x")], ("out.txt", "is a file")),
    Case("export-target-below-a-file", lambda c: ["export", c.tmp, c.file("out.txt", "x") / "hf"],
         ("out.txt is a file",)),
    Case("export-target-not-empty", lambda c: ["export", c.tmp, c.file("full/keep.txt", "x").parent],
         ("full", "not empty")),
    Case("merge-target-exists", lambda c: ["merge", c.tmp, c.tmp], ("already exists",)),
    Case("train-output-dir-flag-is-a-file", lambda c: ["train", c.config(), "--output-dir", c.file("o.txt", "x")],
         ("output_dir", "o.txt")),
    Case("fresh-clone-data-check", lambda c: ["data", "check", _fresh(c)], ("not generated yet", "data.synthetic",
                                                                         "--prepare")),
    Case("fresh-clone-data-show", lambda c: ["data", "show", _fresh(c), "--index", "0"], ("not generated yet",)),
    Case("fresh-clone-inspect", lambda c: ["inspect", _fresh(c)], ("not generated yet", "data.build_tokenizer")),
    Case("data-file-not-json", lambda c: ["data", "check", c.with_("data.train.0.path", str(c.file("t.json", "{oops")))],
         ("t.json",)),
]





# --- data integrity -------------------------------------------------------------------------------------------------
def _data(records: list[Any], name: str = "train.jsonl", split: str = "train", cmd: str = "data check",
          image_root: bool = False) -> Callable[[Ctx], list[Any]]:
    def make(c: Ctx) -> list[Any]:
        import shutil

        d = c.tmp / "d"
        d.mkdir(exist_ok=True)
        shutil.copy(next((c.data_dir / "images").glob("*.png")), d / "x.png")
        (d / "sub").mkdir(exist_ok=True)
        path = d / name
        if name.endswith(".jsonl"):
            c.jsonl(f"d/{name}", records)
        else:
            path.write_text(records[0] if isinstance(records[0], str) else json.dumps(records))
        spec = {"path": str(path), **({"image_root": str(d)} if image_root else {})}
        return [*cmd.split(), c.config(set_path(c.base, f"data.{split}", [spec]))]

    return make


DEEP = "[" * 100_000 + "]" * 100_000
DATA_CASES = [
    Case("jsonl-deeply-nested", _data([record(), DEEP]), ("train.jsonl:2", "bad-json", "nested too deeply")),
    Case("json-deeply-nested", _data(['{"a": ' + DEEP + "}"], name="train.json"),
         ("train.json", "nested too deeply")),
    Case("image-leaves-root", _data([record(image="../x.png")]), ("image-outside-root", "'r0'", "train.jsonl:1")),
    Case("image-leaves-root-nested", _data([record(image="sub/../../d/../x.png")]), ("image-outside-root",)),
    Case("image-absolute-path-with-root", _data([record(image="/etc/hostname")], image_root=True),
         ("image-outside-root", "/etc/hostname")),
    Case("duplicate-record-ids", _data([record(), record()]), ("duplicate-id", "train.jsonl:2", "train.jsonl:1")),
    Case("image-is-a-directory", _data([record(image="sub")]), ("missing-image", "is a directory")),
    Case("image-missing", _data([record(image="nope.png")]), ("missing-image", "nope.png")),
    Case("image-not-an-image", _data([record(image="train.jsonl")]), ("corrupt-image",)),
    Case("record-not-object", _data([[1, 2]]), ("not-an-object", "train.jsonl:1")),
    Case("record-null", _data(["null"]), ("not-an-object",)),
    Case("jsonl-not-utf8", lambda c: _bad_utf8_jsonl(c), ("bad-json", "UTF-8")),
    Case("conversations-missing", _data([{"id": "a", "image": "x.png"}]), ("missing-conversations", "'a'")),
    Case("conversation-empty", _data([record(conversations=[])]), ("empty-conversation",)),
    Case("reply-empty", _data([record(reply="  ")]), ("empty-reply",)),
    Case("turn-content-number", _data([record(conversations=[{"from": "human", "value": 3},
                                                             {"from": "gpt", "value": "x"}])]), ("bad-content",)),
    Case("role-unknown", _data([record(conversations=[{"from": "robot", "value": "<image>"},
                                                      {"from": "gpt", "value": "x"}])]), ("bad-role",)),
    Case("image-list-of-numbers", _data([record(image=[1])]), ("bad-image",)),
    Case("placeholders-vs-images", _data([record(text="<image> twice", image="x.png")]),
         ("image-placeholder-mismatch",)),
    Case("eval-every-image-missing", _data([record(image="gone.png"), {**record(image="gone2.png"), "id": "r1"}],
                                           split="eval", cmd="train"),
         ("data.eval: none of its 2 sample(s) can be used", "missing-image 2")),
    Case("train-every-record-bad", _data([[1], [2]], cmd="train"), ("data.train", "2 of 2 records", "not-an-object")),
]


def _bad_utf8_jsonl(c: Ctx) -> list[Any]:
    path = c.file("d/bad.jsonl", b'{"id": "caf\xe9"}\n')
    return ["data", "check", c.config(set_path(c.base, "data.train", [{"path": str(path)}]))]


CASES = YAML_CASES + VALUE_CASES + FLAG_CASES + OVERRIDE_CASES + PATH_CASES + DATA_CASES


@pytest.mark.parametrize("case", CASES, ids=str)
def test_catalogue(case: Case, ctx: Ctx) -> None:
    res = cli(case.argv(ctx), env=case.env)
    fragments = [f.format(tmp=ctx.tmp) for f in case.fragments]
    assert_fails(res, *fragments, code=case.code)


def test_debug_shows_the_traceback(ctx: Ctx) -> None:
    res = cli(["--debug", "data", "check", ctx.file("bad.yaml", b"name: caf\xe9\n")])
    assert "Traceback (most recent call last)" in res.err


def test_internal_error_says_rerun_with_debug(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmfw.cli.list as list_cmd

    def boom(args: Any) -> int:
        raise RuntimeError("something mmfw did not expect")

    monkeypatch.setattr(list_cmd, "run", boom)
    res = cli(["list"])
    assert_fails(res, "internal error", "RuntimeError: something mmfw did not expect", "--debug", code=1)


def test_valid_config_passes(ctx: Ctx) -> None:
    assert_ok(cli(["data", "check", ctx.config(), "--limit", "4"]), "data.train")
