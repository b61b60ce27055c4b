"""The downstream run prologue (hitrs_fast.training.task_run) through a package entry point: the default
synthetic set, shared with pre-training, and the run's config.json."""

from __future__ import annotations

import json

from hitrs_fast.data.synthetic import ACTIONS, synthetic_cache_path
from hitrs_fast.training import pretrain, recognize


def test_pretraining_and_recognition_share_one_synthetic_set(tmp_path, capsys):
    argv = ["--knn", "--cache-dir", str(tmp_path / "data"), "--synthetic-per-class", "3", "--data-seed", "4",
            "--run-dir", str(tmp_path / "knn"), "--no-progress", "--backend", "torch", "--device", "cpu"]
    assert recognize.main(argv) == 0
    store = synthetic_cache_path(tmp_path / "data", "trimmed", 4, 3)
    assert (store / "meta.json").is_file()
    args = pretrain.build_parser().parse_args(["--cache-dir", str(tmp_path / "data"), "--seed", "4",
                                               "--synthetic-per-class", "3"])
    assert pretrain.ensure_dataset(args, rank=0) == store
    assert capsys.readouterr().out.count("generating") == 1  # recognize generated it, pre-training reused it
    config = json.loads((tmp_path / "knn" / "config.json").read_text())
    assert config["data"] == str(store) and config["recipe_file"].endswith("recognition_synthetic.json")
    assert config["encoder"]["init"] == "random" and config["num_classes"] == len(ACTIONS)
    assert config["args"]["data_seed"] == 4 and config["train_samples"] + config["test_samples"] == 3 * len(ACTIONS)
