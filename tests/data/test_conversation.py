"""Tests for LLaVA record parsing and loading (mmfw.data.conversation)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from mmfw.data.conversation import Conversation, RecordError, load_records, parse_record


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": f, "value": v} for f, v in pairs]


def test_llava_record_maps_roles_and_keeps_image():
    rec = {"id": 7, "image": "a/b.png",
           "conversations": turns(("human", "<image>\nWhat?"), ("gpt", "red"), ("human", "Sure?"), ("gpt", "yes"))}
    conv = parse_record(rec)
    assert conv == Conversation(id="7", images=["a/b.png"], messages=[
        {"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "red"},
        {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "yes"}])
    assert conv.answers == ["red", "yes"]
    assert conv.prompt_messages == conv.messages[:3]


def test_role_content_format_with_system_and_images_list():
    rec = {"conversations": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "<image> vs <image>?"},
                             {"role": "assistant", "content": "left"}],
           "images": ["x.png", "y.png"]}
    conv = parse_record(rec, default_id="f.json:3")
    assert conv.id == "f.json:3"
    assert conv.images == ["x.png", "y.png"]
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant"]
    assert conv.prompt_messages == conv.messages[:2]


def test_extra_keys_become_metadata():
    conv = parse_record({"id": "m", "task": "color", "source": {"a": 1}, "image": "x.png",
                         "conversations": turns(("human", "<image>Q"), ("gpt", "A"))})
    assert conv.metadata == {"task": "color", "source": {"a": 1}}
    assert parse_record({"id": "t", "conversations": turns(("human", "Q"), ("gpt", "A"))}).metadata == {}


def test_text_only_record():
    conv = parse_record({"id": "t", "conversations": turns(("human", "hi"), ("gpt", "hello"))})
    assert conv.images == []
    assert conv.messages[0]["content"] == "hi"


@pytest.mark.parametrize("key", ["image", "images"])
def test_missing_placeholder_is_prepended_to_first_user_turn(key):
    value = "p.png" if key == "image" else ["p.png"]
    rec = {"id": "x", key: value, "conversations": [{"from": "system", "value": "S"}] + turns(("human", "Q?"),
                                                                                              ("gpt", "A"))}
    conv = parse_record(rec)
    assert conv.messages[0] == {"role": "system", "content": "S"}
    assert conv.messages[1] == {"role": "user", "content": "<image>\nQ?"}


def test_missing_placeholders_prepended_once_per_image():
    conv = parse_record({"id": "x", "images": ["a", "b"], "conversations": turns(("human", "Q"), ("gpt", "A"))})
    assert conv.messages[0]["content"] == "<image>\n<image>\nQ"


def test_custom_image_token():
    conv = parse_record({"id": "x", "image": "a", "conversations": turns(("human", "Q"), ("gpt", "A"))},
                        image_token="<img>")
    assert conv.messages[0]["content"] == "<img>\nQ"


def test_parse_does_not_mutate_input():
    rec = {"id": "x", "image": "a", "conversations": turns(("human", "Q"), ("gpt", "A"))}
    before = json.dumps(rec)
    parse_record(rec)
    assert json.dumps(rec) == before


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ({"id": "x"}, "missing-conversations"),
        ({"id": "x", "conversations": "hi"}, "missing-conversations"),
        ({"id": "x", "conversations": []}, "empty-conversation"),
        ({"id": "x", "conversations": [{"from": "system", "value": "S"}]}, "empty-conversation"),
        ({"id": "x", "conversations": turns(("robot", "Q"), ("gpt", "A"))}, "bad-role"),
        ({"id": "x", "conversations": turns(("human", "Q"), ("gpt", "A"), ("system", "S"), ("human", "Q"),
                                             ("gpt", "A"))}, "bad-role"),
        ({"id": "x", "conversations": turns(("gpt", "A"), ("human", "Q"))}, "starts-with-assistant"),
        ({"id": "x", "conversations": turns(("human", "Q"), ("human", "Q2"), ("gpt", "A"))}, "roles-not-alternating"),
        ({"id": "x", "conversations": turns(("human", "Q"), ("gpt", "A"), ("gpt", "B"))}, "roles-not-alternating"),
        ({"id": "x", "conversations": turns(("human", "Q"))}, "no-assistant-reply"),
        ({"id": "x", "conversations": turns(("human", "Q"), ("gpt", "A"), ("human", "Q2"))}, "ends-with-user"),
        ({"id": "x", "image": "a", "conversations": turns(("human", "<image><image>Q"), ("gpt", "A"))},
         "image-placeholder-mismatch"),
        ({"id": "x", "conversations": turns(("human", "<image>Q"), ("gpt", "A"))}, "image-placeholder-mismatch"),
        ({"id": "x", "image": "a", "conversations": turns(("human", "Q"), ("gpt", "<image>A"))}, "image-in-reply"),
        ({"id": "x", "image": 3, "conversations": turns(("human", "Q"), ("gpt", "A"))}, "bad-image"),
        ({"id": "x", "image": "a", "images": ["b"], "conversations": turns(("human", "Q"), ("gpt", "A"))},
         "bad-image"),
        ({"id": "x", "conversations": [{"from": "human"}, {"from": "gpt", "value": "A"}]}, "bad-turn"),
        ({"id": "x", "conversations": ["hello"]}, "bad-turn"),
        ({"id": "x", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "A"}]},
         "bad-content"),
        (["not", "a", "dict"], "not-an-object"),
    ],
)
def test_invalid_records(record, code):
    with pytest.raises(RecordError) as info:
        parse_record(record)
    assert info.value.reason_code == code
    assert code in str(info.value)
    assert info.value.message


def test_error_messages_name_the_record():
    with pytest.raises(RecordError, match=r"'rec-42' has 1 image\(s\) but 2 '<img>' placeholder"):
        parse_record({"id": "rec-42", "image": "a", "conversations": turns(("human", "<img><img>Q"), ("gpt", "A"))},
                     image_token="<img>")


def test_record_error_pickles():
    err = pickle.loads(pickle.dumps(RecordError("bad-role", "msg")))
    assert (err.reason_code, err.message) == ("bad-role", "msg")


def test_load_json_list(tmp_path: Path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"id": "a"}, 5, {"id": "b"}]), encoding="utf-8")
    out = list(load_records(p))
    assert [pos for pos, _ in out] == [0, 1, 2]
    assert out[0][1] == {"id": "a"} and out[2][1] == {"id": "b"}
    assert isinstance(out[1][1], RecordError) and out[1][1].reason_code == "not-an-object"


def test_load_jsonl_reports_bad_lines(tmp_path: Path):
    p = tmp_path / "d.jsonl"
    lines = [json.dumps({"id": "a"}).encode(), b"", b"{not json", b'{"id": "caf\xe9"}', b"[1]",
             json.dumps({"id": "ünï"}, ensure_ascii=False).encode("utf-8")]
    p.write_bytes(b"\n".join(lines) + b"\n")
    out = list(load_records(p))
    assert [pos for pos, _ in out] == [1, 3, 4, 5, 6]
    assert out[0][1] == {"id": "a"}
    assert out[-1][1] == {"id": "ünï"}
    bad = {pos: r for pos, r in out if isinstance(r, RecordError)}
    assert {pos: r.reason_code for pos, r in bad.items()} == {3: "bad-json", 4: "bad-json", 5: "not-an-object"}
    assert f"{p}:3" in bad[3].message and "UTF-8" in bad[4].message and f"{p}:4" in bad[4].message


def test_load_bad_json_file_raises(tmp_path: Path):
    p = tmp_path / "d.json"
    p.write_text("[{", encoding="utf-8")
    with pytest.raises(RecordError) as info:
        list(load_records(p))
    assert info.value.reason_code == "bad-json"
    p.write_text('{"id": 1}', encoding="utf-8")
    with pytest.raises(RecordError, match="expected a JSON list"):
        list(load_records(p))


def test_load_unknown_suffix(tmp_path: Path):
    p = tmp_path / "d.csv"
    p.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported"):
        list(load_records(p))
