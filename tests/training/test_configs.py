"""Packaged configs (hitrs_fast.training.config_files, package hitrs_fast.configs) and downstream recipes
(hitrs_fast.training.recipes): lookup by name or path, error messages, every shipped recipe valid."""

from __future__ import annotations

import fnmatch
import json
from importlib.resources import files
from pathlib import Path

import pytest

from hitrs_fast.training.config_files import CONFIG_PACKAGE, DEEPSPEED, RECIPES, config_names, load_config
from hitrs_fast.training.pretrain import resolve_ds_config
from hitrs_fast.training.recipes import MODES, packaged_scales, recipe_for_scale, resolve_recipe
from hitrs_fast.training.run import UsageError

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
TASKS = ("recognition", "detection", "motion")


def test_packaged_configs_are_the_repository_files():
    assert config_names(DEEPSPEED) == sorted(p.name for p in REPO_CONFIGS.glob("*.json"))
    assert config_names(RECIPES) == sorted(p.name for p in (REPO_CONFIGS / "downstream").glob("*.json"))
    assert {"cpu_fp32.json", "zero1_bf16.json"} <= set(config_names(DEEPSPEED))
    where, value = load_config("cpu_fp32.json", DEEPSPEED, "--ds-config")
    assert value == json.loads((REPO_CONFIGS / "cpu_fp32.json").read_text())
    assert where == str(files(CONFIG_PACKAGE) / "cpu_fp32.json")


def test_package_data_patterns_cover_every_config():
    """What a built wheel ships: every JSON under training/configs/ is package data of its (sub)package."""
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((REPO_CONFIGS.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"][CONFIG_PACKAGE] == "training/configs"
    shipped = sorted(REPO_CONFIGS.rglob("*.json"))
    assert len(shipped) >= 10
    for f in shipped:
        package = ".".join([CONFIG_PACKAGE, *f.parent.relative_to(REPO_CONFIGS).parts])
        assert package in setup["packages"], package
        assert any(fnmatch.fnmatch(f.name, pat) for pat in setup["package-data"].get(package, [])), f


def test_every_package_folder_is_in_the_wheel():
    """pyproject.toml lists the packages by hand (kernels/ and training/configs/ are mapped into hitrs_fast):
    every folder of hitrs_fast/ with an __init__.py must be among them, or the wheel lacks it."""
    tomllib = pytest.importorskip("tomllib")
    root = REPO_CONFIGS.parents[1]
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "hitrs_fast").rglob("__init__.py")}
    assert found <= set(packages), sorted(found - set(packages))


def test_a_path_wins_over_a_packaged_name(tmp_path, monkeypatch):
    own = tmp_path / "cpu_fp32.json"
    own.write_text('{"train_micro_batch_size_per_gpu": 3}')
    monkeypatch.chdir(tmp_path)
    where, value = resolve_ds_config("cpu_fp32.json", cuda=False)  # the file in the cwd, not the packaged one
    assert value == {"train_micro_batch_size_per_gpu": 3} and where == "cpu_fp32.json"
    assert resolve_ds_config(str(own), cuda=True)[1] == value


def test_unknown_name_lists_the_packaged_ones():
    with pytest.raises(UsageError, match=r"--ds-config 'nope.json': no such file.*'zero1_bf16.json'"):
        resolve_ds_config("nope.json", cuda=False)
    with pytest.raises(UsageError) as ei:
        resolve_recipe("motion", "nope.json", 100, "linear", {})
    msg = str(ei.value)
    assert "'motion_released.json', 'motion_synthetic.json'" in msg and "recognition_" not in msg


def test_invalid_json_names_the_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "task": "motion",\n  oops\n}')
    with pytest.raises(UsageError, match=r"--recipe .*bad.json: not valid JSON at line 3"):
        resolve_recipe("motion", str(bad), 100, "linear", {})


# Training-split sizes in each task's unit: (the synthetic sets' defaults, a full dataset's training split).
SIZES = {"recognition": (504, 40_091), "detection": (20_993, 4_000_000), "motion": (16_567, 3_400_000)}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("scale", ["synthetic", "released"])
def test_every_shipped_recipe_resolves_in_every_mode(task, scale):
    size = SIZES[task][scale == "released"]
    for mode in MODES:
        where, recipe = resolve_recipe(task, None, size, mode, {"epochs": None, "lr": None, "batch_size": None})
        assert Path(where).name == f"{task}_{scale}.json"
        assert int(recipe["epochs"]) >= 1 and float(recipe["lr"]) > 0 and recipe["schedule"]


@pytest.mark.parametrize("task", TASKS)
def test_packaged_recipes_cover_every_scale_once(task):
    """Every size from 1 up has exactly one packaged recipe: the ranges touch and do not overlap."""
    bounds = sorted(packaged_scales(task).values())
    assert bounds[0][0] == 1 and bounds[-1][1] is None
    for (_, hi), (lo, _) in zip(bounds, bounds[1:], strict=False):
        assert lo == hi + 1
    for lo, hi in bounds:
        for size in (lo, hi) if hi is not None else (lo, 10 * lo):
            name = recipe_for_scale(task, size)
            assert packaged_scales(task)[name] == (lo, hi)


def test_a_recipe_made_for_another_scale_names_the_one_to_use(tmp_path):
    with pytest.raises(UsageError) as ei:
        resolve_recipe("recognition", "recognition_released.json", 270, "linear", {})
    assert str(ei.value) == ("--recipe recognition_released.json: made for 10,000 or more training samples, but the "
                             "training split has 270: use --recipe recognition_synthetic.json (made for 1 to 9,999 "
                             "training samples), or a recipe file of your own without \"data_scale\"")
    with pytest.raises(UsageError, match="use --recipe motion_released.json"):
        resolve_recipe("motion", "motion_synthetic.json", 3_400_000, "linear", {})
    own = tmp_path / "mine.json"  # a user's recipe without data_scale: used as given at any scale
    own.write_text(json.dumps({"task": "recognition", "common": {"epochs": 1, "batch_size": 2, "lr": 0.1},
                               "linear": {}}))
    assert resolve_recipe("recognition", str(own), 1, "linear", {})[1]["epochs"] == 1
    own.write_text(json.dumps({"task": "recognition", "data_scale": {"unit": "train_frames", "min": 1, "max": None},
                               "linear": {"epochs": 1, "batch_size": 2, "lr": 0.1}}))
    with pytest.raises(UsageError, match='data_scale must be {"unit": "train_samples"'):
        resolve_recipe("recognition", str(own), 1, "linear", {})


def test_recipe_checks(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"task": "motion", "common": {"epochs": 2, "batch_size": 4}, "linear": {"lr": 0.1}}))
    where, recipe = resolve_recipe("motion", str(path), 100, "linear", {"epochs": 5, "lr": None})
    assert recipe["epochs"] == 5 and recipe["lr"] == 0.1 and recipe["grad_accum"] == 1 and where == str(path)
    for args, match in [
        (("recognition", str(path), 100, "linear", {}), "is a recipe for task 'motion'"),
        (("motion", str(path), 100, "finetune", {}), r"no section for mode 'finetune' \(has \['linear'\]\)"),
        (("motion", str(path), 100, "linear", {"lr": -1.0}), "lr > 0"),
        (("motion", str(path), 100, "linear", {"encoder_lr_scale": 0}), "encoder_lr_scale .* must be a number > 0"),
    ]:
        with pytest.raises(UsageError, match=match):
            resolve_recipe(*args)
    with pytest.raises(UsageError, match=r"\(linear\): lacks 'hidden'"):
        resolve_recipe("motion", str(path), 100, "linear", {}, required=("hidden",))
