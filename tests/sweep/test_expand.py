"""The sweep file and its expansion: grid, zip, component swaps, labels, seeds, fingerprints, validation of every
point before anything runs, and located errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmfw.cli.main import main
from mmfw.config import ConfigError, load_config_dict
from mmfw.sweep.expand import fingerprint, plan_study, show_value
from mmfw.sweep.spec import load_sweep
from tests.sweep.conftest import tiny_base, write_sweep


def test_grid_and_zip_expand_to_the_cartesian_product(tmp_path: Path, base_file: Path, registries) -> None:
    sweep = write_sweep(tmp_path, {
        "base": base_file.name,
        "grid": {"training.learning_rate": [1.0e-3, 2.0e-3],
                 "model.connector": {"mlp3": {"type": "mlp", "depth": 3},
                                     "resampler": {"type": "resampler", "num_queries": 4}}},
        "zip": {"training.max_steps": [2, 3], "training.warmup_ratio": [0.0, 0.1]},
        "seeds": [0, 1], "output_dir": str(tmp_path / "study")})
    plan = plan_study(sweep, registries)
    assert len(plan.points) == 2 * 2 * 2 and len(plan.runs) == 16
    assert plan.axes == ["training.learning_rate", "model.connector", "zip"] or plan.axes[:2] == [
        "training.learning_rate", "model.connector"]
    labels = [p.label for p in plan.points]
    assert labels[0] == "0.001 / mlp3 / 2, 0.0" and labels[-1] == "0.002 / resampler / 3, 0.1"
    by_label = {(r.point.label, r.seed): r.config for r in plan.runs}
    cfg = by_label[("0.002 / resampler / 3, 0.1", 1)]
    assert cfg.training.learning_rate == 2e-3 and cfg.training.max_steps == 3 and cfg.training.warmup_ratio == 0.1
    assert cfg.seed == 1
    # a value with another type replaces the whole component mapping: the base mlp's depth does not leak in
    assert cfg.model.connector.type == "resampler" and cfg.model.connector.num_queries == 4
    assert "depth" not in cfg.model.connector.model_dump()
    # the same type merges into the base mapping
    assert by_label[("0.001 / mlp3 / 2, 0.0", 0)].model.connector.depth == 3
    assert plan.points[-1].shown == {"training.learning_rate": "0.002", "model.connector": "resampler(num_queries=4)",
                                     "training.max_steps": "3", "training.warmup_ratio": "0.1"}
    assert len({r.fingerprint for r in plan.runs}) == 16
    assert len({r.run_dir for r in plan.runs}) == 16
    assert all(r.run_dir.parent == tmp_path / "study" / "runs" and r.run_dir.name.endswith(r.fingerprint)
               for r in plan.runs)
    assert all(r.config.output_dir == str(r.run_dir) for r in plan.runs)


def test_zip_labels_and_set(tmp_path: Path, base_file: Path, registries) -> None:
    sweep = write_sweep(tmp_path, {
        "base": base_file.name, "set": {"training.max_steps": 5, "model.connector.depth": 1},
        "zip": {"training.policy.vision_encoder": {"frozen": "frozen", "trained": {"type": "full", "lr_scale": 0.5}},
                "training.learning_rate": [1.0e-3, 5.0e-4]}})
    plan = plan_study(sweep, registries)
    assert [p.label for p in plan.points] == ["frozen", "trained"]
    assert plan.study_dir == Path("runs/sweeps/sweep")  # the default: runs/sweeps/<sweep file name>
    trained = plan.runs[1].config
    assert trained.training.max_steps == 5 and trained.model.connector.depth == 1
    assert trained.training.policy.vision_encoder.lr_scale == 0.5 and trained.training.learning_rate == 5e-4
    assert plan.points[1].shown["training.policy.vision_encoder"] == "full(lr_scale=0.5)"


def test_no_axes_is_one_point(tmp_path: Path, base_file: Path, registries) -> None:
    plan = plan_study(write_sweep(tmp_path, {"base": base_file.name, "seeds": [3]}), registries)
    assert [p.label for p in plan.points] == ["base"] and plan.runs[0].config.seed == 3


def test_fingerprint_ignores_key_order_spelling_name_and_output_dir(tmp_path: Path, shared_data_dir: Path,
                                                                     registries) -> None:
    exp = tiny_base(shared_data_dir)
    a = load_config_dict(exp, registries)
    shuffled = json.loads(json.dumps(exp))
    shuffled = {k: shuffled[k] for k in reversed(list(shuffled))}
    shuffled["training"] = {k: shuffled["training"][k] for k in reversed(list(shuffled["training"]))}
    shuffled["training"]["learning_rate"] = "0.003"  # written as a string of another spelling
    shuffled["training"]["policy"] = {"connector": {"type": "full"}, "vision_encoder": "frozen"}  # the defaults
    shuffled["model"]["connector"] = {"depth": 2, "type": "mlp"}
    shuffled["name"], shuffled["output_dir"] = "other", "somewhere/else"
    b = load_config_dict(shuffled, registries)
    assert fingerprint(a) == fingerprint(b)
    exp["training"]["learning_rate"] = 3.1e-3
    assert fingerprint(load_config_dict(exp, registries)) != fingerprint(a)
    exp["training"]["learning_rate"] = 3e-3
    exp["seed"] = 1
    assert fingerprint(load_config_dict(exp, registries)) != fingerprint(a)


def test_same_file_written_in_another_order_plans_the_same_runs(tmp_path: Path, base_file: Path, registries) -> None:
    body = {"base": base_file.name, "grid": {"model.connector": [{"type": "mlp", "depth": 1},
                                                                  {"type": "linear"}]}, "seeds": [0, 1]}
    one = plan_study(write_sweep(tmp_path, body, "a.yaml"), registries, output_dir=tmp_path / "s")
    base = yaml.safe_load(base_file.read_text())
    (tmp_path / "base2.yaml").write_text(yaml.safe_dump(base, sort_keys=True))
    body2 = {"seeds": [0, 1], "grid": {"model.connector": [{"depth": 1, "type": "mlp"}, {"type": "linear"}]},
             "base": "base2.yaml"}
    two = plan_study(write_sweep(tmp_path, body2, "b.yaml"), registries, output_dir=tmp_path / "s")
    assert [r.fingerprint for r in one.runs] == [r.fingerprint for r in two.runs]
    assert one.points[0].shown == {"model.connector": "mlp(depth=1)"} and show_value({"type": "linear"}) == "linear"


def test_every_point_is_validated_before_any_run(tmp_path: Path, base_file: Path, registries, capsys) -> None:
    study = tmp_path / "study"
    sweep = write_sweep(tmp_path, {
        "base": base_file.name, "output_dir": str(study),
        "grid": {"model.connector": {"mlp": {"type": "mlp"}, "typo": {"type": "resampler", "num_querys": 4},
                                     "linear": {"type": "linear"}},
                 "data.max_length": [96, 8]}})
    with pytest.raises(ConfigError) as err:
        plan_study(sweep, registries)
    problems = err.value.problems
    # points 1 and 5 (.. / 8): the image tokens do not fit; points 2-3 (typo): unknown key; 0 and 4 are fine
    assert any(p.startswith("point 1 (mlp / 8): data.max_length: 8 leaves no room for text")
               and p.endswith("(from grid.data.max_length[1])") for p in problems), problems
    assert any(p.startswith("point 2 (typo / 96): model.connector.num_querys: unknown key")
               and p.endswith("(from grid.model.connector.typo)") for p in problems), problems
    assert any(p.startswith("point 5 (linear / 8): data.max_length") for p in problems), problems
    assert not any(p.startswith(("point 0 ", "point 4 ")) for p in problems)
    assert len(problems) == 4
    assert main(["sweep", str(sweep)]) == 2
    err_out = capsys.readouterr().err
    assert f"error: {sweep}: point 2 (typo / 96): model.connector.num_querys: unknown key" in err_out
    assert not study.exists()  # nothing was written, nothing ran


@pytest.mark.parametrize(("body", "expected"), [
    ({"grdi": {}}, "grdi: unknown key"),
    ({"zip": {"a.b": [1, 2], "c.d": [1]}}, "zip: zip axes must have the same number of values"),
    ({"grid": {"a.b": []}}, "grid: grid.a.b: an axis needs at least one value"),
    ({"grid": {"seed": [1, 2]}}, "vary the seed with seeds:"),
    ({"seeds": [0, 0]}, "seeds: seeds repeat"),
    ({"metric": 3}, "metric: Input should be a valid string"),
    ({"grid": {"model.connector": {"type": "mlp"}}}, "grid.model.connector: a single component mapping"),
])
def test_sweep_file_errors_are_located(tmp_path: Path, base_file: Path, body: dict, expected: str) -> None:
    path = write_sweep(tmp_path, {"base": base_file.name, **body})
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert any(expected in p for p in err.value.problems), err.value.problems
    assert str(err.value).startswith(f"{path}: ")


def test_missing_base_and_bad_base(tmp_path: Path, registries) -> None:
    with pytest.raises(ConfigError, match="base: file not found"):
        plan_study(write_sweep(tmp_path, {"base": "nope.yaml"}), registries)


def test_points_writing_other_data_into_one_directory_are_an_error(tmp_path: Path, base_file: Path,
                                                                     registries) -> None:
    sweep = write_sweep(tmp_path, {"base": base_file.name, "grid": {"data.synthetic.num_train": [64, 32]}})
    with pytest.raises(ConfigError) as err:
        plan_study(sweep, registries)
    assert any("point 1 (32): data.synthetic.out_dir" in p and "point 0 (64)" in p for p in err.value.problems)


def test_points_that_resolve_to_the_same_config_are_an_error(tmp_path: Path, base_file: Path, registries) -> None:
    sweep = write_sweep(tmp_path, {"base": base_file.name, "grid": {"model.connector.depth": [2, 2.0]}})
    with pytest.raises(ConfigError, match=r"point 1 \(2.0\): seed 0: resolves to the same config as point 0"):
        plan_study(sweep, registries)


REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted(p for p in (REPO / "configs" / "ablations").glob("*.yaml") if "base" in yaml.safe_load(p.read_text()))


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.stem)
def test_shipped_studies_expand_and_validate(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmfw.components import collect_registries, make_plugin_manager

    registries = collect_registries(make_plugin_manager())  # with installed plugins (the avgpool connector)
    body = yaml.safe_load(study.read_text())
    needs = {v.get("type") for v in body.get("grid", {}).get("model.connector", {}).values()}
    if not needs <= set(registries.connectors.names()):
        pytest.skip(f"needs connectors {sorted(needs - set(registries.connectors.names()))} (a plugin)")
    monkeypatch.chdir(REPO)
    plan = plan_study(study, registries)
    assert len(plan.runs) == len(plan.points) * len(plan.sweep.seeds) >= 4 and len(plan.sweep.seeds) >= 2
    assert all(r.config.training.max_steps <= 200 for r in plan.runs)


def test_optional_points_are_left_out_when_they_do_not_validate(tmp_path: Path, base_file: Path,
                                                                  registries) -> None:
    body = {"base": base_file.name, "optional": ["plugin"],
            "grid": {"model.connector": {"mlp": {"type": "mlp"}, "plugin": {"type": "not-installed"}}}}
    plan = plan_study(write_sweep(tmp_path, body), registries)
    assert [r.point.label for r in plan.runs] == ["mlp"]
    assert [(p.label, msg.split(";")[0]) for p, msg in plan.skipped] == [
        ("plugin", "model.connector.type: unknown type 'not-installed'")]
    body["optional"] = ["mlp"]  # only the points named are optional
    with pytest.raises(ConfigError, match=r"point 1 \(plugin\): model.connector.type: unknown type"):
        plan_study(write_sweep(tmp_path, body), registries)
    body["optional"] = ["plugn"]
    with pytest.raises(ConfigError, match=r"optional: \['plugn'\] are not point labels"):
        plan_study(write_sweep(tmp_path, body), registries)
