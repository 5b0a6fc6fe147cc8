"""lmms-eval on an mmfw run: the ``mmfw_synth`` task gives exactly mmfw's own evaluation (same questions, same
answers, same score); the model class is found through lmms-eval's entry point; loglikelihood is the model's own
token log-probability. Skipped where lmms-eval is not installed (``pip install -e ".[eval]"``)."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lmms_eval", reason='lmms-eval is not installed (pip install -e ".[eval]")')

from mmfw.cli.main import main  # noqa: E402
from mmfw.config import load_config_dict  # noqa: E402
from mmfw.data.synth import normalize_answer  # noqa: E402
from mmfw.training.evaluate import read_predictions  # noqa: E402
from mmfw.training.trainer import Trainer  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, registries, synth_data, tiny_model) -> Path:
    """A directory laid out like the quickstart's (data/synth, runs/tiny) with a tiny run trained on it."""
    work = tmp_path_factory.mktemp("lmms")
    shutil.copytree(Path(synth_data.train).parent, work / "data" / "synth")
    exp = {
        "name": "tiny", "seed": 0, "output_dir": str(work / "runs" / "tiny"), "model": tiny_model,
        "data": {"train": [{"path": str(work / "data/synth/train.json")}],
                 "eval": [{"path": str(work / "data/synth/eval.json")}], "max_length": 96},
        "training": {"max_steps": 160, "batch_size": 16, "learning_rate": 3e-3, "warmup_ratio": 0.1, "log_every": 20,
                     "trackers": [], "policy": {"vision_encoder": "full"}, "max_new_tokens": 6},
    }
    torch.set_num_threads(1)
    Trainer(load_config_dict(exp, registries), registries, progress=False).train()
    return work


def test_mmfw_eval_gives_the_accuracy_of_metrics_json(workdir: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workdir)
    assert main(["eval", "runs/tiny", "--tasks", "mmfw_synth", "--batch-size", "5"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((workdir / "runs/tiny/lmms_eval.json").read_text())
    score = results["results"]["mmfw_synth"]["exact_match,none"]
    accuracy = json.loads((workdir / "runs/tiny/metrics.json").read_text())["eval"]["accuracy"]
    assert results["n-samples"]["mmfw_synth"]["effective"] == 32
    assert score == pytest.approx(accuracy, abs=1e-12)
    assert 0.0 < accuracy < 1.0  # a partly trained model: the comparison is not trivially all-right or all-wrong
    assert f"mmfw_synth: exact_match {score:.4f} (32 documents)" in printed


def test_lmms_eval_answers_equal_mmfw_predictions(workdir: Path, monkeypatch) -> None:
    from mmfw.eval.harness import run_lmms_eval

    monkeypatch.chdir(workdir)
    results = run_lmms_eval("runs/tiny", ["mmfw_synth"], limit=12, batch_size=4)
    samples = sorted(results["samples"]["mmfw_synth"], key=lambda s: s["doc_id"])
    mine = read_predictions(workdir / "runs/tiny/predictions.jsonl")[:12]
    assert [s["doc"]["id"] for s in samples] == [p["id"] for p in mine]
    assert [normalize_answer(s["filtered_resps"][0]) for s in samples] == [normalize_answer(p["prediction"])
                                                                           for p in mine]
    assert [s["exact_match"] for s in samples] == [float(p["correct"]) for p in mine]


def test_mmfw_is_an_lmms_eval_model_through_the_entry_point() -> None:
    names = [ep.name for ep in importlib.metadata.entry_points(group="lmms_eval.models")]
    if "mmfw" not in names:
        pytest.skip("mmfw is not pip-installed here (entry points exist only after `pip install -e .`)")
    from lmms_eval.models import get_model

    from mmfw.eval.lmms_model import MMFWLmms

    assert get_model("mmfw") is MMFWLmms


def _request(kind: str, args: tuple, idx: int = 0):
    from lmms_eval.api.instance import Instance

    return Instance(request_type=kind, arguments=args, idx=idx,
                    metadata={"task": args[4], "doc_id": args[3], "repeats": 1})


def test_loglikelihood_is_the_models_token_log_probability(workdir: Path) -> None:
    from mmfw.eval.lmms_model import MMFWLmms

    lm = MMFWLmms(pretrained=str(workdir / "runs/tiny"))
    records = json.loads((workdir / "data/synth/eval.json").read_text())
    docs = {i: {"path": workdir / "data/synth" / r["image"]} for i, r in enumerate(records)}
    lm.task_dict = {"t": {"test": docs}}
    from PIL import Image

    visual = lambda doc: [Image.open(doc["path"])]  # noqa: E731
    question = records[0]["conversations"][0]["value"].replace("<image>\n", "")
    greedy = lm.generate_until([_request("generate_until", (question, {"until": []}, visual, 0, "t", "test"))])[0]
    (lp_greedy, is_greedy), (lp_other, other_greedy) = lm.loglikelihood([
        _request("loglikelihood", (question, greedy, visual, 0, "t", "test")),
        _request("loglikelihood", (question, greedy + " zebra", visual, 0, "t", "test"), 1)])
    assert is_greedy and not other_greedy
    assert lp_other < lp_greedy < 0
    # the same number from the model's own loss: mean cross-entropy over the continuation's tokens
    p = lm.pipeline
    prompt = p.prepare([Image.open(docs[0]["path"])], question)
    cont = torch.tensor(p.tokenizer.encode(greedy, add_special_tokens=False))
    item = {**prompt, "input_ids": torch.cat([prompt["input_ids"], cont]),
            "labels": torch.cat([prompt["labels"], cont])}
    batch = p.collator([item])
    with torch.no_grad():
        loss = p.model(**batch.model_inputs(labels=True)).loss
    assert lp_greedy == pytest.approx(-float(loss) * cont.numel(), rel=1e-4)


def test_multi_round_requests_are_refused_with_the_task_name(workdir: Path) -> None:
    from mmfw.eval.lmms_model import MMFWLmms

    lm = MMFWLmms(pretrained=str(workdir / "runs/tiny"))
    with pytest.raises(NotImplementedError, match="'chat_task'.*single-round"):
        lm.generate_until_multi_round([_request("generate_until_multi_round", ("q", {}, None, 0, "chat_task", "t"))])


def test_unknown_task_and_missing_data_are_one_line_errors(workdir: Path, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    monkeypatch.chdir(workdir)
    assert main(["eval", "runs/tiny", "--tasks", "mmfw_synthh", "--include-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown lmms-eval task(s) ['mmfw_synthh']" in err and "did you mean 'mmfw_synth'?" in err
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(workdir / "runs/tiny"), "--tasks", "mmfw_synth"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data/synth/eval.json, which does not exist here" in err


def test_missing_harness_names_the_extra(workdir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "lmms_eval.evaluator", None)  # import fails as if not installed
    assert main(["eval", str(workdir / "runs/tiny"), "--tasks", "mmfw_synth"]) == 2
    assert 'pip install -e ".[eval]"' in capsys.readouterr().err
