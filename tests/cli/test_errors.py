"""What the CLI reports as one line (mmfw's own errors) and what keeps its traceback (everything else)."""

from __future__ import annotations

import pytest

import mmfw.cli.list
from mmfw.cli.main import EXPECTED_ERRORS, build_parser, main
from mmfw.config.experiment import SyntheticDataConfig
from mmfw.errors import ConfigError, InvalidArgumentError, MMFWError


def _raise(err: BaseException):
    def run(args):
        raise err
    return run


def test_a_bug_is_one_line_with_exit_code_1_and_keeps_its_traceback_for_debug(monkeypatch, capsys) -> None:
    assert ValueError not in EXPECTED_ERRORS and MMFWError in EXPECTED_ERRORS
    monkeypatch.setattr(mmfw.cli.list, "run", _raise(ValueError("a bug")))
    assert main(["list"]) == 1  # not reported as bad input (2), and no traceback without --debug
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: ValueError: a bug" in err[0] and "--debug" in err[0]
    with pytest.raises(ValueError, match="a bug"):
        main(["--debug", "list"])


@pytest.mark.parametrize(("err", "line"), [
    (InvalidArgumentError("num_train and num_eval must be non-negative"),
     "error: num_train and num_eval must be non-negative"),
    (ConfigError(["model.connector.depth: must be positive"], source="exp.yaml"),
     "error: exp.yaml: model.connector.depth: must be positive"),
])
def test_mmfw_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, err, line) -> None:
    monkeypatch.setattr(mmfw.cli.list, "run", _raise(err))
    assert main(["list"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_synth_flags_default_to_the_data_synthetic_config() -> None:
    args = build_parser().parse_args(["data", "synth"])
    cfg = SyntheticDataConfig()
    assert (args.out, args.num_train, args.num_eval, args.image_size, args.seed) == (
        cfg.out_dir, cfg.num_train, cfg.num_eval, cfg.image_size, cfg.seed)
    assert tuple(args.tasks) == cfg.tasks and tuple(args.extra_train_questions) == cfg.extra_train_questions
    with pytest.raises(SystemExit):  # choices come from the config's Literal
        build_parser().parse_args(["data", "synth", "--tasks", "size"])


def test_synth_rejects_bad_values_in_one_line(tmp_path, capsys) -> None:
    assert main(["data", "synth", "--out", str(tmp_path), "--num-train", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --num-train: Input should be greater than 0"
