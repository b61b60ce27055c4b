"""The GPU-side Triton paths that can run on a machine without a GPU, as a subprocess.

Run by tests/kernels/test_triton_gpu_paths.py with ``TRITON_INTERPRET`` unset, so that
``@triton.jit`` yields real ``JITFunction`` objects and the kernel modules register their
ops with ``torch.library.triton_op`` exactly as on a GPU. Without a GPU, Triton has no
active driver; :class:`TargetOnlyDriver` answers the one question compilation and
torch's kernel analysis ask ("which GPU?") and nothing else, so nothing can launch.

Commands (each prints one JSON document on stdout; ``python tests/kernels/triton_without_gpu.py``):

- ``trace``: ``torch.compile(fullgraph=True)`` with an AOTAutograd backend that records the
  forward and backward graphs of ``frame_attention`` (resident and split kernels),
  ``frame_attention_qkv``, the fused attention block and ``joint_embedding`` (fake CPU
  tensors: the graphs are traced, never run) and reports every
  ``triton_kernel_wrapper_functional`` node: kernel name, the tensors torch found the
  kernel writes (from the kernel's TTIR), and the grid of every candidate config;
- ``compile CASE...`` (``compile-deepest``: one config per tile shape): records the launches the real
  launchers make (``launchable`` replaced by a recorder), runs each autotuner's own prune
  function on them with the Hopper config lists, and compiles every kept config to a cubin
  for sm_90 through ``JITFunction.warmup`` (the JIT's own argument specialization),
  reporting shared memory, registers, stack (spills) and whether the PTX uses wgmma (for the joint
  embedding also the SASS instruction count of the backward loop, :func:`loop_instructions`);
- ``binaries``: how many binaries each kernel compiles across several N and B * H.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    raise SystemExit("tests/kernels/triton_without_gpu.py: run with TRITON_INTERPRET unset")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

SM90 = GPUTarget("cuda", 90, 32)
H100_SHARED_BYTES = 227 * 1024  # largest dynamic shared memory one block may use on sm_90


class TargetOnlyDriver:
    """A Triton driver that names a GPU target and cannot launch anything."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


if not torch.cuda.is_available():
    triton.runtime.driver.set_active(TargetOnlyDriver(SM90))

# The repository root, so that the test support package imports when this file runs as a script.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from hitrs_fast.kernels import attention_block as ab  # noqa: E402
from hitrs_fast.kernels import capabilities  # noqa: E402
from hitrs_fast.kernels import ffn_block as ffn  # noqa: E402
from hitrs_fast.kernels import frame_attention as fa  # noqa: E402
from hitrs_fast.kernels import joint_embedding as je  # noqa: E402
from hitrs_fast.kernels.common.launch import autotune_key  # noqa: E402
from hitrs_fast.kernels.frame_attention import kernels as fak  # noqa: E402
from hitrs_fast.kernels.frame_attention import tuning as fat  # noqa: E402
from tests.support.devices import Launch, record_launches  # noqa: E402


def _kernel_name(kernel) -> str:
    while not hasattr(kernel, "__name__") and hasattr(kernel, "fn"):
        kernel = kernel.fn
    return getattr(kernel, "__name__", type(kernel).__name__)


def _pin_last_kept(launches: list[Launch]) -> dict[str, dict]:
    """Stands in for the GPU benchmark of a traced launch's cold autotuner cache: each autotuned launch's cache
    gets the last config its prune function keeps, under the key the launch computes. Tracing then pins that
    config (``kernels/common/launch.py``); returns it by kernel name."""
    pinned = {}
    for launch in launches:
        tuner = launch.kernel
        if not hasattr(tuner, "cache"):
            continue
        kept = tuner.early_config_prune(list(tuner.configs), launch.named_args(), **launch.kwargs) \
            if tuner.early_config_prune else list(tuner.configs)
        tuner.cache[autotune_key(tuner, launch.args, launch.kwargs)] = kept[-1]
        pinned[_kernel_name(tuner)] = {**kept[-1].kwargs, "num_warps": kept[-1].num_warps,
                                       "num_stages": kept[-1].num_stages, "candidates": len(kept)}
    return pinned


def trace() -> dict:
    from torch._dynamo.backends.common import aot_autograd
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from torch._subclasses.fake_tensor import FakeTensorMode

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    backend = aot_autograd(fw_compiler=record, bw_compiler=record)

    def wrapper_nodes(gm) -> list[dict]:
        found = []
        for node in gm.graph.nodes:
            if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
                kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
                configs = getattr(kernel, "configs", None)  # the configs the compiled graph would tune over
                found.append({"kernel": _kernel_name(kernel), "writes": sorted(node.kwargs["tensors_to_clone"]),
                              "configs": [{**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}
                                          for c in configs] if configs else [{}],
                              "grids": [list(g) for g in node.kwargs["grid"]]})
        return found

    report = {}
    b, h, n, d = 3, 2, 51, 32
    pinned = {}
    for variant in capabilities.FRAME_ATTENTION_KERNELS:
        launches = _attention_launches(torch.float32, b, h, n, d, fa.MASK_FRAME, fa.CLS_LAST, True, None, variant)
        pinned |= _pin_last_kept(launches)
    c = 32
    x, ln_w, ln_b = torch.randn(7, 25, c), torch.ones(c), torch.zeros(c)
    wqkv, wo, seed = torch.randn(3 * h * d, c), torch.randn(c, h * d), torch.zeros(1, dtype=torch.int64)
    block_args = (ln_w, ln_b, wqkv, wo, seed, h, 1e-5, d ** -0.5, fa.MASK_NONE, 1, fa.CLS_NONE, True, 0.2)
    pinned |= _pin_last_kept(record_launches(ab.ops, ab.attention_block_fwd, x, *block_args)
                             + record_launches(ab.ops, ab.attention_block_bwd, torch.randn_like(x), x, *block_args))
    report["pinned"] = pinned
    for variant in capabilities.FRAME_ATTENTION_KERNELS:
        os.environ[capabilities.FRAME_ATTENTION_KERNEL_ENV] = variant
        torch._dynamo.reset()
        attention = torch.compile(lambda q, k, v: fa.frame_attention(q, k, v, frame_size=25), backend=backend,
                                  fullgraph=True)
        with FakeTensorMode():
            q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
            attention(q, k, v).sum().backward()
        report[f"frame_attention_{variant}"] = {"shape": [b, h, n, d], "graphs": [wrapper_nodes(g) for g in graphs]}
        graphs.clear()
    os.environ[capabilities.FRAME_ATTENTION_KERNEL_ENV] = "split,resident"  # a mixed pair on the projection path
    qkv_attention = torch.compile(lambda qkv: fa.frame_attention_qkv(qkv, h, frame_size=25), backend=backend,
                                  fullgraph=True)
    with FakeTensorMode():
        qkv_attention(torch.randn(b, n, 3 * h * d, requires_grad=True)).sum().backward()
    report["frame_attention_qkv"] = {"graphs": [wrapper_nodes(g) for g in graphs]}
    graphs.clear()
    os.environ.pop(capabilities.FRAME_ATTENTION_KERNEL_ENV)
    block = torch.compile(lambda *t: ab.AttentionBlockFunction.apply(*t, h, 1e-5, d ** -0.5, fa.MASK_NONE, 1,
                                                                    fa.CLS_NONE, True, 0.2),
                          backend=backend, fullgraph=True)
    with FakeTensorMode():
        tensors = [torch.randn(*s, requires_grad=True) for s in ((7, 25, c), (c,), (c,), (3 * h * d, c), (c, h * d))]
        block(*tensors, torch.zeros(1, dtype=torch.int64)).sum().backward()
    report["attention_block"] = {"graphs": [wrapper_nodes(g) for g in graphs]}
    graphs.clear()
    # The kernel's autograd Function itself: the public dispatcher keeps CPU tensors off Triton here.
    embed = torch.compile(lambda *t: je.JointEmbeddingFunction.apply(*t, 1e-5, torch.float32, True),
                          backend=backend, fullgraph=True)
    with FakeTensorMode():
        tensors = [torch.randn(*s, requires_grad=True) for s in ((4, 25, 3), (32, 3), (32,), (32,), (32,), (25, 32))]
        embed(*tensors).sum().backward()
    report["joint_embedding"] = {"graphs": [wrapper_nodes(g) for g in graphs]}
    return report


def cuobjdump(cubin: bytes, option: str) -> str:
    """``cuobjdump <option>`` of a cubin, with the cuobjdump that ships with Triton."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    path = f"/tmp/hitrs_fast_aot_{os.getpid()}.cubin"
    with open(path, "wb") as f:
        f.write(cubin)
    try:
        return subprocess.run([tool, option, path], capture_output=True, text=True, check=True).stdout
    finally:
        os.remove(path)


def resource_usage(cubin: bytes) -> dict:
    """Registers, spills (local memory) and shared memory of a cubin."""
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", cuobjdump(cubin, "-res-usage")))
    return {k.lower(): int(v) for k, v in usage.items()}


def _deepest_per_tile(configs: list) -> list:
    """One config per tile shape: the one with the most pipeline stages (the most shared memory: a tile's
    shared memory grows with its stages and does not depend on num_warps in any sm_90 compile seen)."""
    deepest = {}
    for config in configs:
        key = str(config.kwargs)
        if key not in deepest or config.num_stages > deepest[key].num_stages:
            deepest[key] = config
    return list(deepest.values())


def compile_launches(launches: list[Launch], deepest_only: bool = False, sass: bool = False) -> list[dict]:
    """Compile every config each launch's autotuner keeps after pruning (or the launch's fixed config);
    ``deepest_only``: one per tile shape (:func:`_deepest_per_tile`), a quarter of the compile time;
    ``sass``: add the launch's meta-parameters and :func:`loop_instructions` to each row."""
    rows = []
    for launch in launches:
        kernel = launch.kernel
        named = launch.named_args()
        if isinstance(kernel, triton.runtime.autotuner.Autotuner):
            prune = kernel.early_config_prune
            configs = prune(kernel.configs, named, **launch.kwargs) if prune else kernel.configs
            configs = _deepest_per_tile(configs) if deepest_only else configs
            jit = kernel.fn
        else:
            configs, jit = [None], kernel
        for config in configs:
            meta = {**launch.kwargs, **(config.all_kwargs() if config else {})}
            grid = launch.grid({**named, **meta}) if callable(launch.grid) else launch.grid
            compiled = jit.warmup(*launch.args, grid=grid, **meta)
            rows.append({"kernel": _kernel_name(jit), "config": config.kwargs if config else {},
                         "num_warps": compiled.metadata.num_warps, "num_stages": compiled.metadata.num_stages,
                         "grid": list(grid), "shared": compiled.metadata.shared,
                         "usage": resource_usage(compiled.asm["cubin"]), "wgmma": "wgmma" in compiled.asm["ptx"]})
            if sass:
                rows[-1]["meta"] = {k: v for k, v in launch.kwargs.items() if isinstance(v, (int, str))}
                rows[-1]["loop"] = loop_instructions(compiled.asm["cubin"])
    return rows


# name -> (dtype, B, H, N, D, mask kind, cls, allow_self, lengths); the split kernels unless the name says resident
ATTENTION_CASES = {
    "official-bf16-N176-D64": (torch.bfloat16, 2, 8, 176, 64, fa.MASK_FRAME, fa.CLS_LAST, True, None),
    "resident-official-bf16-N176-D64": (torch.bfloat16, 2, 8, 176, 64, fa.MASK_FRAME, fa.CLS_LAST, True, None),
    "resident-fp16-noself-N151-D32": (torch.float16, 2, 8, 151, 32, fa.MASK_FRAME, fa.CLS_LAST, False, None),
    "resident-fp32-N101-D64": (torch.float32, 2, 8, 101, 64, fa.MASK_FRAME, fa.CLS_LAST, True, None),
    "resident-vtrs-keypad-bf16-N44-D64": (torch.bfloat16, 4, 8, 44, 64, fa.MASK_NONE, fa.CLS_NONE, True,
                                          [3, 44, 7, 1]),
    "fp32-tf32x3-N176-D64": (torch.float32, 2, 8, 176, 64, fa.MASK_FRAME, fa.CLS_LAST, True, None),
    "fp16-noself-N151-D32": (torch.float16, 2, 8, 151, 32, fa.MASK_FRAME, fa.CLS_LAST, False, None),
    "bf16-clsfirst-N251-D128": (torch.bfloat16, 2, 2, 251, 128, fa.MASK_FRAME, fa.CLS_FIRST, True, None),
    "fp32-N251-D128": (torch.float32, 2, 2, 251, 128, fa.MASK_FRAME, fa.CLS_LAST, True, None),
    "vtrs-keypad-bf16-N14-D64": (torch.bfloat16, 4, 8, 14, 64, fa.MASK_NONE, fa.CLS_NONE, True, [3, 14, 7, 1]),
    "ftrs-nomask-bf16-N25-D64": (torch.bfloat16, 4, 8, 25, 64, fa.MASK_NONE, fa.CLS_NONE, True, None),
    "fp16-N1026-D16": (torch.float16, 1, 1, 1026, 16, fa.MASK_FRAME, fa.CLS_LAST, True, None),
}
# name -> (dtype, B, H, N, D, mask kind, lengths, frame_attention keywords): the split kernels' optional features
# (issue 24) at peer shapes, including the dBias kernel.
FEATURE_CASES = {
    "features-ids-window-bias-dropout-bf16-N176-D64": (torch.bfloat16, 2, 8, 176, 64, fa.MASK_WINDOW, [150, 176],
                                                       {"window": 1, "dropout": True, "ids": True, "bias": (1, 8)}),
    "features-joint-major-frame-bias-fp32-N176-D32": (torch.float32, 2, 4, 176, 32, fa.MASK_FRAME, None,
                                                      {"joint_frames": 7, "bias": (2, 1)}),
}
EMBEDDING_CASES = {"joint-embedding-fp32-out": torch.float32, "joint-embedding-bf16-out": torch.bfloat16}
# name -> (x dtype, C, F, dropout): the fused FFN sublayer at the three levels' widths, bf16 dots (autocast: fp32 x)
FFN_CASES = {
    "ffn-ftrs-bf16": (torch.bfloat16, 128, 128, 0.2),
    "ffn-ctrs-fp32-x": (torch.float32, 256, 128, 0.2),
    "ffn-vtrs-fp32-x": (torch.float32, 512, 256, 0.2),
}
# name -> (x dtype, compute dtype, N, C, mask kind, dropout): the fused block at the F-TRS shape (H 8 x D 64)
BLOCK_CASES = {
    "block-ftrs-bf16": (torch.bfloat16, torch.bfloat16, 25, 128, fa.MASK_NONE, 0.2),
    "block-ftrs-fp32-x-bf16-autocast": (torch.float32, torch.bfloat16, 25, 128, fa.MASK_NONE, 0.2),
    "block-ftrs-fp32": (torch.float32, torch.float32, 25, 128, fa.MASK_NONE, 0.0),
    "block-ctrs-F1-bf16-N26-C256": (torch.bfloat16, torch.bfloat16, 26, 256, fa.MASK_FRAME, 0.2),
}


def _attention_launches(dtype, b, h, n, d, kind, cls_pos, allow_self, lengths, variant="split") -> list[Launch]:
    q, k, v, do = (torch.randn(b, h, n, d, dtype=dtype) for _ in range(4))
    lens = torch.tensor(lengths) if lengths is not None else None
    mask = (lens, d ** -0.5, kind, 25, cls_pos, allow_self, True)
    fwd = record_launches(fa.ops, fa.frame_attention_fwd, q, k, v, *mask, variant=variant)
    lse = torch.zeros(b, h, n)
    return fwd + record_launches(fa.ops, fa.frame_attention_bwd, do, q, k, v, q, lse, *mask, variant=variant)


def _feature_launches(dtype, b, h, n, d, kind, lengths, options) -> list[Launch]:
    """The split kernels' launches (forward, backward, dBias) with the features of ``options``."""
    q, k, v, do = (torch.randn(b, h, n, d, dtype=dtype) for _ in range(4))
    ids = torch.randint(-1, 7, (b, n), dtype=torch.int32) if options.get("ids") else None
    bias = torch.randn(*options["bias"], n, n, dtype=dtype) if "bias" in options else None
    features = fa.Features(bias=bias, q_ids=ids, k_ids=ids,
                           frame_source=fa.FRAMES_FROM_IDS if ids is not None else (
                               fa.FRAMES_JOINT_MAJOR if options.get("joint_frames") else fa.FRAMES_FRAME_MAJOR),
                           num_frames=options.get("joint_frames", 0), window=options.get("window", 0),
                           seed=torch.zeros(1, dtype=torch.int64) if options.get("dropout") else None,
                           dropout_p=0.1 if options.get("dropout") else 0.0)
    lens = torch.tensor(lengths) if lengths is not None else None
    mask = (lens, d ** -0.5, kind, 25, fa.CLS_NONE, True, False)
    lse = torch.zeros(b, h, n)
    launches = record_launches(fa.ops, fa.frame_attention_fwd, q, k, v, *mask, features=features)
    launches += record_launches(fa.ops, fa.frame_attention_bwd, do, q, k, v, q, lse, *mask, features=features)
    if bias is not None:
        launches += record_launches(fa.ops, fa.frame_attention_dbias, do, q, k, v, q, lse, *mask, features)
    return launches


def _block_launches(x_dtype, compute_dtype, n, c, kind, dropout) -> list[Launch]:
    """The fused block's forward and backward launches: 64 sequences, 8 heads of 64."""
    heads, d = 8, 64
    x = torch.randn(64, n, c, dtype=x_dtype)
    params = (torch.ones(c), torch.zeros(c), torch.randn(3 * heads * d, c, dtype=compute_dtype),
              torch.randn(c, heads * d, dtype=compute_dtype), torch.zeros(1, dtype=torch.int64) if dropout else None)
    mask = (heads, 1e-5, d ** -0.5, kind, 25, fa.CLS_LAST if kind == fa.MASK_FRAME else fa.CLS_NONE, True, dropout)
    fwd = record_launches(ab.ops, ab.attention_block_fwd, x, *params, *mask)
    return fwd + record_launches(ab.ops, ab.attention_block_bwd, torch.randn_like(x), x, *params, *mask)


def _ffn_launches(x_dtype, c, f, dropout) -> list[Launch]:
    """The fused FFN sublayer's forward and backward launches: 4 096 rows, bf16 weights, fp32 LN and biases."""
    x = torch.randn(4096, c, dtype=x_dtype)
    params = (torch.ones(c), torch.zeros(c), torch.randn(f, c, dtype=torch.bfloat16), torch.zeros(f),
              torch.randn(c, f, dtype=torch.bfloat16), torch.zeros(c))
    seed = torch.zeros(1, dtype=torch.int64) if dropout else None
    fwd = record_launches(ffn.ops, ffn.ffn_block_fwd, x, *params, seed, 1e-5, dropout, True)
    stats = torch.zeros(4096)
    return fwd + record_launches(ffn.ops, ffn.ffn_block_bwd, torch.randn_like(x), x, *params[:5], stats, stats,
                                 seed, dropout)


def _embedding_launches(out_dtype: torch.dtype) -> list[Launch]:
    """The model's joint embedding (V = 25, C = 3, d = 128), fp32 coordinates and parameters: the forward and
    every backward kernel (``je.BWD_VARIANTS``)."""
    x = torch.randn(64, 25, 3)
    params = [torch.randn(128, 3), torch.randn(128), torch.randn(128), torch.randn(128), torch.randn(25, 128)]
    launches = record_launches(je.ops, je.joint_embedding_fwd, x, *params, 1e-5, out_dtype, True)
    stats = torch.zeros(64 * 25)
    dy = torch.randn(64, 25, 128, dtype=out_dtype)
    weight, bias, ln_weight, _, _ = params
    saved = os.environ.get(je.BWD_VARIANT_ENV)
    try:
        for variant in je.BWD_VARIANTS:
            os.environ[je.BWD_VARIANT_ENV] = variant
            launches += record_launches(je.ops, je.joint_embedding_bwd, dy, x, weight, bias, ln_weight, stats, stats)
    finally:
        if saved is None:
            os.environ.pop(je.BWD_VARIANT_ENV, None)
        else:
            os.environ[je.BWD_VARIANT_ENV] = saved
    return launches


def loop_instructions(cubin: bytes) -> dict:
    """SASS of a kernel's longest loop (a backward branch): instructions per thread per iteration, and the
    barriers and local-memory (spill) accesses among them. The per-token cost model of the joint-embedding
    backward is built from these counts (docs/kernels/joint_embedding.md)."""
    code = [(int(a, 16), op) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", cuobjdump(cubin, "-sass"))]
    index = {address: i for i, (address, _) in enumerate(code)}
    body = []
    for i, (address, op) in enumerate(code):
        target = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", op)
        if target and int(target.group(1), 16) < address and int(target.group(1), 16) in index:
            body = max(body, [o for _, o in code[index[int(target.group(1), 16)]:i + 1]], key=len)
    names = [o.split()[1] if o.startswith("@") else o.split()[0] for o in body]
    return {"instructions": len(body), "barriers": sum(n.startswith("BAR") for n in names),
            "local": sum(n.startswith(("LDL", "STL")) for n in names)}


def compile_cases(names: list[str], deepest_only: bool) -> dict:
    """Every named case compiled for the GPU with the Hopper config lists, as the real launchers launch it."""
    report = {}
    with fa.autotune_configs(fa.gpu_fwd_configs(hopper=True), fa.gpu_bwd_configs(hopper=True),
                             resident=fa.gpu_resident_configs(hopper=True)):
        for name in names:
            embedding = name in EMBEDDING_CASES
            if embedding:
                launches = _embedding_launches(EMBEDDING_CASES[name])
            elif name in BLOCK_CASES:
                launches = _block_launches(*BLOCK_CASES[name])
            elif name in FEATURE_CASES:
                launches = _feature_launches(*FEATURE_CASES[name])
            elif name in FFN_CASES:
                launches = _ffn_launches(*FFN_CASES[name])
            else:
                variant = "resident" if name.startswith("resident") else "split"
                launches = _attention_launches(*ATTENTION_CASES[name], variant=variant)
            report[name] = compile_launches(launches, deepest_only, sass=embedding)
    return report


def binaries_across_shapes() -> dict:
    """Binaries compiled per kernel for one config over N = 13, 14, 15, 16 and B * H = 1, 3, 64, 4096
    (V-TRS-like: key padding, no frame mask): ``do_not_specialize`` should keep it at one each."""
    counts = {}
    with fa.autotune_configs([fat.SAFE_FWD], [fat.SAFE_BWD]):
        for kernel in (fak.frame_attention_fwd_kernel, fak.frame_attention_bwd_dkdv_kernel,
                       fak.frame_attention_bwd_dq_kernel, fak.frame_attention_bwd_preprocess_kernel):
            before = sum(len(c[0]) for c in kernel.device_caches.values())
            for b, n in ((1, 13), (3, 14), (64, 15), (4096, 16)):
                launches = _attention_launches(torch.bfloat16, b, 1, n, 64, fa.MASK_NONE, fa.CLS_NONE, True, [n] * b)
                compile_launches([x for x in launches if kernel in (x.kernel, getattr(x.kernel, "fn", None))])
            counts[kernel.__name__] = sum(len(c[0]) for c in kernel.device_caches.values()) - before
    return counts


if __name__ == "__main__":
    command, names = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "trace":
        print(json.dumps(trace()))
    elif command in ("compile", "compile-deepest"):
        print(json.dumps(compile_cases(names, deepest_only=command == "compile-deepest")))
    elif command == "binaries":
        print(json.dumps(binaries_across_shapes()))
    else:
        sys.stderr.write("usage: triton_without_gpu.py trace | binaries | compile[-deepest] CASE...\n")
        raise SystemExit(2)
