"""Pre-training entry point: argument checks, schedule, checkpoints, resume after kill -9,
and 2 ranks x B/2 == 1 rank x B (DeepSpeed on CPU with gloo)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hitrs_fast.training.checkpoint import CheckpointManager
from hitrs_fast.training.loop import check_resumable, fit
from hitrs_fast.training.optim import parameter_groups, warmup_linear_decay
from hitrs_fast.training.pretrain import UsageError, build_parser, cpu_allreduce_buffer, resolve

ROOT = Path(__file__).resolve().parents[2]
DEEPSPEED = shutil.which("deepspeed", path=os.path.dirname(sys.executable)) or shutil.which("deepspeed")
needs_deepspeed = pytest.mark.skipif(DEEPSPEED is None, reason="deepspeed launcher not installed (train extra)")
LOSSES = ("loss", "pose_loss", "clip_order_loss", "video_order_loss", "nce_loss")


def resolved(*argv, world=1, cuda=False):
    return resolve(build_parser().parse_args(list(argv)), world, cuda)


def test_defaults_resolve():
    run = resolved()
    assert run["preset"] == "tiny" and run["global_batch"] == run["micro_batch"] * run["grad_accum"]
    assert run["deepspeed"]["gradient_clipping"] == 1.0 and not run["deepspeed"]["bf16"]["enabled"]


@pytest.mark.parametrize("argv,world,match", [
    (["--preset", "huge"], 1, "unknown; available"),
    (["--data", "/nonexistent/store"], 1, "not a hitrs_fast store"),
    (["--global-batch", "10", "--grad-accum", "4"], 1, "divisible by ranks x accumulation"),
    (["--global-batch", "9"], 2, "not divisible by ranks x accumulation"),
    (["--ds-config", "nope.json"], 1, "no such file"),
    (["--ds-config", "large_batch_lamb.json"], 1, "Lamb is DeepSpeed's FusedLamb"),
    (["--set", "dropout=1.5"], 1, "dropout must be in"),
    (["--set", "nonsense"], 1, "FIELD=VALUE"),
    (["--steps", "0"], 1, "--steps must be >= 1"),
    (["--group-by-length", "-1"], 1, "--group-by-length must be >= 0"),
    (["--probe-repeats", "0"], 1, "--probe-repeats must be >= 1"),
    (["--threads", "0"], 1, "--threads must be >= 1"),
])
def test_bad_arguments_stop_before_training(argv, world, match):
    with pytest.raises(UsageError, match=match):
        resolved(*argv, world=world)


def test_length_grouping_default_per_preset():
    assert resolved()["group_by_length"] == 8 and resolved("--preset", "official")["group_by_length"] == 0
    assert resolved("--group-by-length", "0")["group_by_length"] == 0


def test_probe_pairs_label_subsets_with_random_inits(tmp_path, capsys):
    """Run k probes subset k with the random encoder of seed + 1 + k: an encoder drawn with seed + 1
    must score exactly what random-init run 0 scores."""
    from hitrs_fast.config import HiTRSConfig
    from hitrs_fast.data.store import SkeletonStore
    from hitrs_fast.data.synthetic import write_synthetic
    from hitrs_fast.models import HiTRS
    from hitrs_fast.training.pretrain import run_probe

    store = SkeletonStore(write_synthetic(tmp_path / "syn", samples_per_class=6, num_classes=3, seed=1))
    args = build_parser().parse_args(["--probe-fraction", "0.5", "--probe-repeats", "2", "--backend", "torch"])
    cfg = HiTRSConfig.preset("tiny")
    torch.manual_seed(args.seed + 1)
    twin = HiTRS(cfg, backend="torch")
    result = run_probe(twin, store, args, cfg, "cpu")
    assert result["repeats"] == 2 and len(result["pretrained"]["runs"]) == 2
    assert result["pretrained"]["runs"][0] == result["random_init"]["runs"][0]
    for name in ("pretrained", "random_init"):
        runs = result[name]["runs"]
        assert result[name]["test_top1"] == pytest.approx(sum(runs) / 2)
        assert all(0.0 <= v <= 1.0 for v in runs)
    assert "random_init" in capsys.readouterr().out


def test_large_batch_config_derives_accumulation():
    run = resolved("--ds-config", "large_batch_lamb.json", world=2, cuda=True)
    assert run["global_batch"] == 4096 and run["micro_batch"] * run["grad_accum"] * 2 == 4096
    assert run["optimizer"] == "lamb" and run["deepspeed"]["bf16"]["enabled"]


def test_schedule_released_shape():
    f = warmup_linear_decay(1000, 50_000, 2e-6 / 4e-4)
    assert f(0) == 0 and f(500) == 0.5 and f(1000) == 1.0
    assert abs(f(30_000) * 4e-4 - 1.64e-4) < 1e-6  # the released checkpoint's lr
    assert f(50_000) == f(80_000) == 2e-6 / 4e-4


def test_encoder_lr_scale_trains_the_encoder_at_its_own_lr(tmp_path):
    """A fine-tuning recipe's encoder_lr_scale: parameter_groups splits off model.encoder's parameters and the
    epoch loop gives them lr x scale. AdamW's first step moves every weight by its group's lr (the update is
    m / sqrt(v) = sign(g) after bias correction), so the step sizes show the lrs."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.encoder, model.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)
    groups = parameter_groups(model, 0.01, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted((g["lr_scale"], g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in groups) == [
        (0.1, 0.0, ["encoder.bias"]), (0.1, 0.01, ["encoder.weight"]),
        (1.0, 0.0, ["head.bias"]), (1.0, 0.01, ["head.weight"])]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    recipe = {"epochs": 1, "grad_accum": 1, "lr": 1e-2, "weight_decay": 0.0, "schedule": "constant",
              "eval_every": 1, "encoder_lr_scale": 0.1}
    fit(model=model, mode="finetune", recipe=recipe, run_dir=tmp_path, batches=lambda epoch: [(x, y)],
        loss_fn=lambda b: torch.nn.functional.cross_entropy(model.head(model.encoder(b[0])), b[1]),
        evaluate=lambda epoch: ({"acc": 0.0}, None), primary="acc", higher_is_better=True, seed=0, resume=False,
        desc="t", progress=False)
    for name, lr in (("encoder.weight", 1e-3), ("encoder.bias", 1e-3), ("head.weight", 1e-2), ("head.bias", 1e-2)):
        moved = (dict(model.named_parameters())[name].detach() - before[name]).abs()
        torch.testing.assert_close(moved, torch.full_like(moved, lr), rtol=1e-3, atol=0.0)


def test_resume_with_other_parameter_groups_is_one_clear_line(tmp_path):
    """A fine-tune started without encoder_lr_scale (2 parameter groups) and resumed with it (4): the epoch loop
    refuses with one line naming the checkpoint, not torch's optimizer error."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.encoder, model.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    recipe = {"epochs": 1, "grad_accum": 1, "lr": 1e-2, "weight_decay": 0.01, "schedule": "constant", "eval_every": 1}
    args = dict(model=model, mode="finetune", run_dir=tmp_path, batches=lambda epoch: [(x, y)],
                loss_fn=lambda b: torch.nn.functional.cross_entropy(model.head(model.encoder(b[0])), b[1]),
                evaluate=lambda epoch: ({"acc": 0.0}, None), primary="acc", higher_is_better=True, seed=0,
                desc="t", progress=False)
    fit(recipe=recipe, resume=False, **args)
    ckpt = tmp_path / "checkpoint.pt"
    check_resumable(model, recipe, torch.load(ckpt, weights_only=False), ckpt)  # same model and groups: accepted
    scaled = {**recipe, "epochs": 2, "encoder_lr_scale": 0.1}
    with pytest.raises(UsageError, match=r"checkpoint\.pt was written with another optimiser .* \[2, 2\] tensors, "
                       r"now \[1, 1, 1, 1\]: the recipe's encoder_lr_scale"):
        fit(recipe=scaled, resume=True, **args)
    model.head = torch.nn.Linear(4, 5)
    with pytest.raises(UsageError, match=r"another model .* head.weight: checkpoint \(3, 4\), built \(5, 4\)"):
        fit(recipe=recipe, resume=True, **args)


def test_no_decay_groups():
    from hitrs_fast import HiTRSConfig, HiTRSForPretraining

    model = HiTRSForPretraining(HiTRSConfig.preset("tiny"))
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "encoder.clip_encoder.cls_token" in nd and "encoder.video_encoder.pos" in nd
    assert "encoder.frame_encoder.embedding.pos" in nd and "encoder.frame_encoder.embedding.norm.weight" in nd
    assert all(not names[id(p)].endswith("bias") for p in decay["params"])
    assert "encoder.clip_encoder.transformer.layers.0.attn.q_proj.weight" not in nd


class FakeEngine:
    def __init__(self, fail=False):
        self.fail = fail

    def save_checkpoint(self, root, tag, client_state, save_latest):
        assert not save_latest
        (Path(root) / tag).mkdir(parents=True)
        (Path(root) / tag / "part0").write_text("x")
        if self.fail:
            raise KeyboardInterrupt("killed mid-save")
        (Path(root) / tag / "part1").write_text(json.dumps(client_state))


def test_checkpoint_never_half_written(tmp_path):
    mgr = CheckpointManager(tmp_path / "ck", keep=2)
    mgr.save(FakeEngine(), 10, {"step": 10})
    with pytest.raises(KeyboardInterrupt):
        mgr.save(FakeEngine(fail=True), 20, {"step": 20})
    assert mgr.latest_tag() == "step00000010"  # the partial step-20 directory is never pointed to
    mgr.save(FakeEngine(), 30, {"step": 30})
    assert mgr.latest_tag() == "step00000030"
    assert sorted(p.name for p in (tmp_path / "ck").iterdir() if p.is_dir()) == ["step00000010", "step00000030"]


def test_checkpoint_retention(tmp_path):
    one = CheckpointManager(tmp_path / "one", keep=1)
    every = CheckpointManager(tmp_path / "all", keep=0)
    for step in (10, 20, 30):
        one.save(FakeEngine(), step, {"step": step})
        every.save(FakeEngine(), step, {"step": step})
    assert sorted(p.name for p in (tmp_path / "one").iterdir() if p.is_dir()) == ["step00000030"]
    assert sorted(p.name for p in (tmp_path / "all").iterdir() if p.is_dir()) == [
        "step00000010", "step00000020", "step00000030"]


def launch(tmp_path: Path, run_dir: Path, *extra: str, gpus: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [DEEPSPEED, "--num_gpus", str(gpus), "--master_port", str(29500 + os.getpid() % 1000 + gpus),
           str(ROOT / "training" / "pretrain.py"), "--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "data"),
           "--synthetic-per-class", "12", "--probe", "off", "--log-every", "1", *extra]
    log = open(run_dir.with_suffix(".log"), "w")
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, run_dir: Path, timeout: float = 400) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, run_dir.with_suffix(".log").read_text()[-3000:]


def losses(run_dir: Path) -> list[list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[r["step"]] + [r[k] for k in LOSSES] for r in rows]


@needs_deepspeed
def test_resume_after_kill9_follows_same_trajectory(tmp_path):
    # Dropout and every pretext task on, so the test covers that all their draws resume exactly.
    common = ("--steps", "6", "--micro-batch", "6", "--ckpt-every", "2", "--set", "dropout=0.1",
              "--set", "use_video_tasks=true")
    reference = tmp_path / "reference"
    finish(launch(tmp_path, reference, *common), reference)

    killed = tmp_path / "killed"
    proc = launch(tmp_path, killed, *common)
    latest = killed / "checkpoints" / "latest_tag"
    encoder = killed / "encoder.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.exists() and "step00000002" in latest.read_text()
                                          and encoder.exists()):
        assert proc.poll() is None, killed.with_suffix(".log").read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # encoder.pt is exported at every checkpoint, so a run killed mid-way leaves one for --init.
    assert torch.load(encoder, weights_only=True)["step"] in (2, 4)
    finish(launch(tmp_path, killed, *common, "--resume"), killed)
    assert losses(killed) == losses(reference)  # exact on CPU
    # Output to a file (not a terminal): one line per logged step, no progress bar's carriage returns.
    log = reference.with_suffix(".log").read_text()
    assert "\r" not in log and [f"step {s}/6 loss" in log for s in range(1, 7)] == [True] * 6


@needs_deepspeed
def test_two_ranks_match_one_rank(tmp_path):
    common = ("--steps", "1", "--global-batch", "8", "--augment", "none", "--set", "dropout=0.0",
              "--set", "use_video_tasks=true")  # InfoNCE negatives gathered across ranks included
    dumps = []
    for gpus in (1, 2):
        run_dir = tmp_path / f"ranks{gpus}"
        dump = tmp_path / f"grads{gpus}.pt"
        finish(launch(tmp_path, run_dir, *common, "--dump-grads", str(dump), gpus=gpus), run_dir)
        dumps.append(torch.load(dump))
        # DeepSpeed's CPU all-reduce segments (one per rank) are released, not left in /dev/shm.
        port = str(29500 + os.getpid() % 1000 + gpus)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MASTER_ADDR", "127.0.0.1")
            env.setenv("MASTER_PORT", port)
            assert not [r for r in range(gpus) if cpu_allreduce_buffer(r).exists()], list(Path("/dev/shm").iterdir())
    one, two = dumps
    for key in LOSSES:
        assert abs(one["losses"][key] - two["losses"][key]) < 1e-4 * max(1.0, abs(one["losses"][key])), key
    for name, g in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], g, atol=1e-5, rtol=1e-4, msg=name)


@needs_deepspeed
def test_bf16_zero1_pretraining_runs(tmp_path):
    """The documented CUDA default (ZeRO-1, bf16) on CPU: DeepSpeed casts the parameters to bf16 while the
    loader yields fp32 coordinates; every pretext task trains and the saved encoder is bf16."""
    run_dir = tmp_path / "bf16"
    finish(launch(tmp_path, run_dir, "--ds-config", "zero1_bf16.json", "--precision", "bf16", "--steps", "3",
                  "--micro-batch", "4", "--grad-accum", "1", "--set", "use_video_tasks=true"), run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in rows for k in LOSSES)
    state = torch.load(run_dir / "encoder.pt")["state_dict"]
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    assert json.loads((run_dir / "config.json").read_text())["deepspeed"]["bf16"]["enabled"] is True
