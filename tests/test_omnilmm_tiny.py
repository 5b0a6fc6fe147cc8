"""``configs/omnilmm-tiny.yaml`` (EVA02 + Resampler + Mistral with image start/end tokens, new-token-row training and
augmentation) trains through ``mmfw train``; its label masks are right on the real Mistral tokenizer; a misplaced
image end token stops the run with an error naming the sample, the image and the record."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import mistral_common
import pytest
import torch
import yaml
from accelerate.utils import set_seed
from safetensors.torch import load_file

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.data.check import load_data_pipeline
from mmfw.data.dataset import build_dataset
from mmfw.data.tokenize import IGNORE_INDEX
from mmfw.model.builder import build_model

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "omnilmm-tiny.yaml"
EMBED, HEAD = "llm.model.model.embed_tokens.weight", "llm.model.lm_head.weight"


def _experiment(root: Path, **changes) -> dict:
    """The shipped config with its data and run directories under ``root``."""
    text = CONFIG.read_text().replace("data/synth-tiny", str(root / "data"))
    exp = yaml.safe_load(text)
    exp["output_dir"] = str(root / "run")
    for key, value in changes.items():
        section, _, name = key.partition(".")
        exp[section][name] = value
    return exp


def _write(exp: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory) -> Path:
    """The real Mistral (v1) sentencepiece tokenizer, as a tokenizer directory."""
    from transformers import LlamaTokenizer

    raw = tmp_path_factory.mktemp("mistral-raw")
    shutil.copy(Path(os.path.dirname(mistral_common.__file__)) / "data" / "tokenizer.model.v1", raw / "tokenizer.model")
    out = tmp_path_factory.mktemp("mistral")
    LlamaTokenizer.from_pretrained(str(raw)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("omnilmm-tiny")
    exp = _experiment(root)
    torch.set_num_threads(1)
    assert main(["-q", "train", str(_write(exp, root / "exp.yaml")), "--no-progress"]) == 0
    return root, exp


def test_trains_and_only_new_token_rows_move(trained, registries) -> None:
    root, exp = trained
    cfg = load_config_dict(exp, registries)
    set_seed(cfg.seed)  # the first stage's model, as the trainer builds it
    init, tok = build_model(cfg.model, registries)
    before = {k: v.detach() for k, v in init.state_dict().items()}
    rows = torch.zeros(len(tok), dtype=torch.bool)
    rows[list(init.added_token_ids)] = True
    assert {tok.convert_ids_to_tokens(i) for i in init.added_token_ids} == {"<image>", "<im_start>", "<im_end>"}
    for model_dir in (root / "run" / "stages" / "align" / "model", root / "run" / "model"):
        after = load_file(str(model_dir / "model.safetensors"))
        for name in (EMBED, HEAD):
            assert torch.equal(after[name][~rows], before[name][~rows]), f"{model_dir}: {name} original rows moved"
            assert not torch.equal(after[name][rows], before[name][rows])
    align = load_file(str(root / "run" / "stages" / "align" / "model" / "model.safetensors"))
    frozen_llm = [k for k in align if k.startswith("llm.") and k not in (EMBED, HEAD)]
    assert frozen_llm and all(torch.equal(align[k], before[k]) for k in frozen_llm)


def test_label_masks_on_the_real_mistral_tokenizer(tmp_path, mistral_dir, registries) -> None:
    exp = _experiment(tmp_path)
    exp["model"]["llm"]["tokenizer"] = str(mistral_dir)
    _write(exp, tmp_path / "exp.yaml")
    assert main(["-q", "data", "check", str(tmp_path / "exp.yaml"), "--prepare", "--limit", "4"]) == 0
    cfg = load_config_dict(exp, registries)
    tok, strategy = load_data_pipeline(cfg, registries)
    assert len(tok) == 32000 + 3
    ds = build_dataset(cfg.data.train, cfg.data, tok, strategy, image_token="<image>",
                       image_markers=cfg.model.fusion.image_markers)
    start, end, image = (tok.convert_tokens_to_ids(t) for t in ("<im_start>", "<im_end>", "<image>"))
    for i in range(12):
        item = ds[i]
        ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
        p = ids.index(start)
        assert ids[p:p + 18] == [start] + [image] * 16 + [end]
        assert all(labels[q] == IGNORE_INDEX for q in range(p, p + 18))
        supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
        assert supervised == [lab for lab in labels if lab != IGNORE_INDEX]
        # exactly the replies, each with Mistral's </s>, and nothing of the [INST] prompt
        replies = ds.answers(i)
        assert supervised[-1] == tok.eos_token_id and supervised.count(tok.eos_token_id) == len(replies)
        text = tok.decode(supervised, skip_special_tokens=False)
        assert text.replace(" ", "") == "".join(r + "</s>" for r in replies).replace(" ", "")
        assert "[INST]" not in text and "[/INST]" in tok.decode(ids, skip_special_tokens=False)
    # and it trains on that tokenizer (one step per stage)
    exp["stages"][0]["max_steps"] = exp["stages"][1]["max_steps"] = 1
    assert main(["-q", "train", str(_write(exp, tmp_path / "exp.yaml")), "--no-progress"]) == 0


def test_misplaced_end_token_fails_with_a_located_error(tmp_path, monkeypatch, capsys) -> None:
    import mmfw.data.tokenize as tokenize

    original = tokenize._expand_images

    def end_one_late(ids, labels, tid, counts, sample_id, markers=None):  # type: ignore[no-untyped-def]
        out_ids, out_labels, spans, shift = original(ids, labels, tid, counts, sample_id, markers)
        e = spans[0][1] - 1  # the first image's end token swaps places with the token after it
        out_ids[e], out_ids[e + 1] = out_ids[e + 1], out_ids[e]
        return out_ids, out_labels, spans, shift

    monkeypatch.setattr(tokenize, "_expand_images", end_one_late)
    exp = _experiment(tmp_path)
    code = main(["-q", "train", str(_write(exp, tmp_path / "exp.yaml")), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2  # a located error, not a traceback
    assert re.search(r"error: a training batch does not fit the model: sample 0, image 0 \(start token at position \d+\): the image end token "
                     r"must come right after its 16 feature rows, at position \d+; found token \d+ "
                     r"\[sample 0 is record 'train_\d+'\]", err), err
