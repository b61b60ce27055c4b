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


def test_epochs_follow_from_the_data():
    """min_steps / min_passes raise the recipe's epochs (eval_every in proportion); --epochs is taken as given."""
    from hitrs_fast.training.recipes import plan_epochs

    recipe = {"epochs": 6, "eval_every": 6, "min_steps": 400}
    plan, line = plan_epochs(recipe, steps_per_epoch=10, steps_per_pass=10, epochs_given=False)
    assert plan["epochs"] == 40 and plan["eval_every"] == 40 and plan["optimizer_steps"] == 400
    assert line == "training: 40 epochs x 10 optimizer steps = 400 steps (the recipe's 6 epochs raised to make at " \
                   "least 400 steps)"
    plan, _ = plan_epochs({**recipe, "min_passes": 3}, steps_per_epoch=10, steps_per_pass=188, epochs_given=False)
    assert plan["epochs"] == 57 and plan["optimizer_steps"] == 570  # 3 passes of 188 steps
    plan, line = plan_epochs(recipe, steps_per_epoch=100, steps_per_pass=100, epochs_given=False)
    assert plan["epochs"] == 6 and line.endswith("(the recipe's epochs (at least 400 steps))")
    plan, line = plan_epochs({**recipe, "epochs": 2}, steps_per_epoch=10, steps_per_pass=10, epochs_given=True)
    assert plan["epochs"] == 2 and line.endswith("(--epochs as given; the recipe asks for at least 400 steps)")


def test_a_result_at_chance_ends_with_a_warning(tmp_path, capsys):
    """A recognition result no better than always predicting the most frequent test class prints a WARNING
    with what to try, and summary.json says so (here: a test split of one class, where chance is 1.0)."""
    import numpy as np

    from hitrs_fast.data.store import StoreSample, write_store

    rng = np.random.default_rng(0)
    samples = [StoreSample(f"s{i}", rng.normal(size=(24, 1, 25, 3)).astype(np.float32), label=i % 2)
               for i in range(6)]
    store = write_store(tmp_path / "store", samples, info={"source": "test"},
                        splits={"train": np.arange(4), "test": np.array([4])})
    assert recognize.main(["--data", str(store), "--mode", "linear", "--epochs", "1", "--run-dir", str(tmp_path / "r"),
                           "--no-progress", "--backend", "torch", "--device", "cpu"]) == 0
    verdict = json.loads((tmp_path / "r" / "summary.json").read_text())["versus_baseline"]
    assert verdict["baseline"] == "chance (always the most frequent class)" and verdict["baseline_value"] == 1.0
    assert verdict["no_better_than_baseline"] and verdict["metric"] == "top-1"
    warning = capsys.readouterr().out.strip().splitlines()[-1]
    assert warning == (f"WARNING: last epoch top-1 {verdict['value']:.4f} is no better than chance (always the most "
                       "frequent class) (1.0000) on 'test': the model learned nothing usable in 1 optimizer steps; "
                       "train longer (--epochs), fine-tune (--mode finetune) or start from a pre-trained encoder "
                       "(--init)"), warning
