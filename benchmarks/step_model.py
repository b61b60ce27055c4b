"""Performance model of one whole Hi-TRS pre-training step (forward, backward, optimizer), per design.

A planning model, calibrated on what a GPU measured, not a measurement. For each candidate design of the step it
lists every part (per level: input map, attention sublayers, FFN sublayers, the clip gather; the heads and
losses, the pretext sampling, the optimizer) as kernels with their HBM bytes, matrix FLOPs and launches, and
predicts

- GPU time: per kernel the larger of bytes / (copy bandwidth x efficiency) and FLOPs / GEMM rate, plus a fixed
  gap per launch; the attention kernels themselves take their measured time per sequence (scaled by bytes to
  other sequence lengths);
- host time: launches x the host cost of one launch (eager PyTorch op, Inductor kernel, or one CUDA-graph
  replay per graph);
- the step: the larger of the two (the host queues work ahead of the GPU).

Efficiencies and host costs are fitted to the H200 rows of ``docs/benchmarks-measured.md`` (commit 0c9228d):
eager kernels from the C-TRS attention sublayer of the Triton backend, fused kernels from ``torch.compile`` + SDPA
of the same sublayer, the host cost of an eager op from the Triton backend's eager step; the torch backend's
eager step and ``torch.compile`` of it are the checks (:func:`calibration`). The pure roofline model of the
attention sublayer (``benchmarks/attention_block_model.py``) was 34-52 % optimistic there: its kernels were
assumed at the copy bandwidth, while the measured eager and fused kernels reach a fraction of it (the fitted
efficiencies), and it had no launch or host terms.

Run ``python -m benchmarks.step_model`` (``--preset``, ``--batch``, ``--frames``, ``--machine``) for the tables of
docs/benchmarks.md; ``--parts DESIGN`` prints one design part by part.
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass, field, replace

from hitrs_fast.config import HiTRSConfig

# ---- what a GPU measured (H200, docs/benchmarks-measured.md, commit 0c9228d, B = 8192 sequences) -------------------

MEASURED_H200 = {
    "copy_bandwidth": 4223e9,  # B/s, 1 GiB device-to-device copy
    # C-TRS attention (N 176, 8 x 64, bf16), ms per 8192 sequences: fwd, bwd.
    "attention_ours": (3.64, 10.6),  # split kernels (the default)
    "attention_cudnn": (5.30, 13.5),  # SDPA cuDNN (what SDPA's default runs there)
    "attention_naive_compiled": (9.13, 20.8 - 9.13),  # torch.compile of the reference math (A0c)
    # C-TRS attention sublayer (LN, QKV, attention, W_o, dropout, residual; width 256), ms per 8192 clips.
    "sublayer_ours_split": (9.32, 27.8),  # fwd, fwd+bwd: eager composition around the split kernels
    "sublayer_compile_sdpa": (9.61, 29.7),  # torch.compile of the composition around SDPA (cuDNN)
    "sublayer_eager_sdpa": (10.9, 33.1),
    # Joint embedding, 8192 frames, bf16 out, fwd+bwd ms: the fused kernel (frame-tile backward).
    "embedding_ours": 0.782,
    "embedding_compiled": 0.933,
    "embedding_eager": 1.27,
    # One official-preset step, 64 x 100 frames, bf16 autocast, fused AdamW, ms (do_bench median).
    "step_triton_eager": 52.6,
    "step_torch_eager": 81.7,
    "step_torch_compile": 34.4,
}
MEASURED_ROWS_COMMIT = "0c9228d"


@dataclass(frozen=True)
class Machine:
    """Achieved rates of one GPU (the fitted ones are replaced by :func:`calibrate`)."""

    name: str
    copy_bandwidth: float  # B/s
    gemm_rate: float = 600e12  # FLOP/s reached by cuBLAS bf16 GEMMs at these shapes (fitted)
    eff_eager: float = 0.6  # fraction of copy bandwidth an eager kernel reaches (fitted)
    eff_fused: float = 0.7  # ... a fused Inductor or Triton kernel (fitted)
    gap_s: float = 2e-6  # GPU time per launch beyond the roofline: launch latency, tail of a small grid
    host_eager_s: float = 20e-6  # host time per eager op (Python, dispatcher, autograd; fitted)
    host_compiled_s: float = 6e-6  # host time per kernel of an Inductor graph without CUDA graphs
    host_graph_s: float = 30e-6  # host time per CUDA-graph replay
    attention_scale: float = 1.0  # measured attention times are H200's: scale by the bandwidth ratio


H200 = Machine("H200", MEASURED_H200["copy_bandwidth"])


# ---- designs ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Design:
    """One way to run the step.

    attention: ``naive`` (the reference math), ``cudnn`` (SDPA), ``ours`` (the Triton kernels). frame_block:
    ``fused`` (F-TRS attention sublayer in one kernel) or ``composed``. compiled: ``torch.compile`` (Inductor fuses
    the elementwise work between GEMMs and kernels); cuda_graphs: its ``reduce-overhead`` mode; epilogues:
    ``max-autotune`` (GEMM templates take the elementwise tail, e.g. GELU, dropout and the residual, in their
    epilogue). residual: bytes of an element of the C-TRS / V-TRS residual stream (4: fp32, as under autocast
    today; 2: bf16). ffn: ``composed`` or ``fused`` (LN, fc1, GELU, fc2, dropout, residual in one kernel each way).
    """

    name: str
    attention: str
    frame_block: str = "composed"
    embedding: str = "eager"
    compiled: bool = False
    cuda_graphs: bool = False
    epilogues: bool = False
    residual: int = 4
    ffn: str = "composed"
    measured: str | None = None  # key of MEASURED_H200 holding this design's measured step


DESIGNS = [
    Design("torch eager (reference)", "naive", measured="step_torch_eager"),
    Design("triton eager (today's Triton backend)", "ours", "fused", "kernel", measured="step_triton_eager"),
    Design("torch + compile (naive attention)", "naive", compiled=True, measured="step_torch_compile"),
    Design("peer: torch + SDPA + compile max-autotune", "cudnn", compiled=True, epilogues=True),
    Design("peer: torch + SDPA + compile reduce-overhead", "cudnn", compiled=True, cuda_graphs=True),
    Design("triton + compile", "ours", "fused", "kernel", compiled=True),
    Design("triton + compile + CUDA graphs", "ours", "fused", "kernel", compiled=True, cuda_graphs=True),
    Design("triton + compile + CUDA graphs + bf16 residual", "ours", "fused", "kernel", compiled=True,
           cuda_graphs=True, residual=2),
    Design("triton + compile + CUDA graphs + fused FFN", "ours", "fused", "kernel", compiled=True, cuda_graphs=True,
           ffn="fused"),
    Design("triton + compile + CUDA graphs + bf16 residual + fused FFN", "ours", "fused", "kernel", compiled=True,
           cuda_graphs=True, residual=2, ffn="fused"),
]


# ---- kernels ------------------------------------------------------------------------------------------------------

@dataclass
class Kernel:
    """One launch: HBM ``bytes``, GEMM ``flops``; ``fused``: an Inductor / Triton fusion (else an eager op);
    ``fixed_s``: a measured time that replaces the roofline (the attention kernels)."""

    name: str
    bytes: float = 0.0
    flops: float = 0.0
    fused: bool = False
    fixed_s: float | None = None

    def gpu_s(self, m: Machine) -> float:
        if self.fixed_s is not None:
            return self.fixed_s * m.attention_scale + m.gap_s
        eff = m.eff_fused if self.fused else m.eff_eager
        return max(self.bytes / (m.copy_bandwidth * eff), self.flops / m.gemm_rate) + m.gap_s


@dataclass
class Part:
    """A part of the step: its kernels forward and backward."""

    name: str
    fwd: list[Kernel] = field(default_factory=list)
    bwd: list[Kernel] = field(default_factory=list)

    def kernels(self) -> list[Kernel]:
        return self.fwd + self.bwd


def ew(name: str, rows: float, read: float, write: float, fused: bool) -> Kernel:
    """An elementwise / normalisation kernel over ``rows`` tokens: ``read`` and ``write`` bytes per token."""
    return Kernel(name, rows * (read + write), fused=fused)


def gemm(name: str, rows: float, k: int, n: int, a_bytes: float, out_bytes: float, fused: bool = False,
         extra_read: float = 0.0) -> Kernel:
    """``[rows, k] @ [k, n]``: activations in HBM (a_bytes per element in, out_bytes per element out; weights stay
    in L2); ``extra_read`` bytes per row for an epilogue's inputs."""
    return Kernel(name, rows * (k * a_bytes + n * out_bytes + extra_read), 2.0 * rows * k * n, fused=fused)


def wgrad(name: str, rows: float, k: int, n: int, a: float = 2) -> Kernel:
    """A weight gradient ``[k, rows] @ [rows, n]``: both activations read, the (small) weight written."""
    return Kernel(name, rows * (k + n) * a, 2.0 * rows * k * n)


# ---- the step's shapes --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One pre-training micro-batch: ``batch`` samples of ``frames`` frames (static shapes, as compiled)."""

    config: HiTRSConfig
    batch: int
    frames: int

    @property
    def clips(self) -> int:
        return math.ceil(self.frames / self.config.clip_stride)

    @property
    def frame_tokens(self) -> int:
        return self.batch * (self.frames + 2 * self.config.clip_pad) * self.config.num_joints

    @property
    def grad_clips(self) -> int:
        """C-TRS sequences with a graph: the clip-order pairs, plus the context when the video tasks train it."""
        c = self.config
        context = self.clips - 1 if c.use_video_tasks and c.video_grad_to_clips > 0 else 0
        return self.batch * ((2 * c.clip_order_pairs if c.use_clip_tasks else 0) + context)

    @property
    def nograd_clips(self) -> int:
        """C-TRS sequences without a graph: the InfoNCE targets (and the context when it gets no gradient)."""
        c = self.config
        if not c.use_video_tasks:
            return 0
        return self.batch * (1 + (self.clips - 1 if c.video_grad_to_clips == 0 else 0))

    @property
    def video_sequences(self) -> int:
        return 2 * self.batch if self.config.use_video_tasks else 0


def attention_time(w: Workload, design: Design, n: int, seqs: int, direction: str) -> float:
    """Seconds of the attention kernel (or the peer's) for ``seqs`` sequences of ``n`` tokens: the H200 time per
    C-TRS sequence, scaled by the bytes of a sequence (Q, K, V and O: proportional to n; memory-bound)."""
    key = {"ours": "attention_ours", "cudnn": "attention_cudnn", "naive": "attention_naive_compiled"}[design.attention]
    per_seq = MEASURED_H200[key][0 if direction == "fwd" else 1] * 1e-3 / 8192
    return per_seq * (n / w.config.clip_tokens) * seqs


def ln_head(rows: int, width: int, r: int, fused: bool) -> list[Kernel]:
    """A sublayer's LayerNorm: fused with the cast to bf16 (one kernel) or, eager, autocast's fp32 LayerNorm then
    the cast the Linear asks for."""
    if fused:
        return [ew("LN + cast", rows, r * width, 2 * width + 8, True)]
    return [ew("layer_norm (fp32 out)", rows, r * width, 4 * width, False),
            ew("cast to bf16", rows, 4 * width, 2 * width, False)]


def dropout_residual(rows: int, width: int, r: int, drop: bool, fused: bool) -> list[Kernel]:
    """The tail ``x + dropout(z)`` after the sublayer's last GEMM: one fused kernel, or eager dropout then add."""
    if fused:
        return [ew("dropout + residual", rows, 2 * width + r * width, r * width + drop * width, True)]
    return ([ew("dropout", rows, 2 * width, 3 * width, False)] if drop else []) + [
        ew("residual add", rows, 2 * width + r * width, r * width, False)]


def ln_residual_bwd(rows: int, width: int, r: int, parts: int, fused: bool) -> list[Kernel]:
    """LayerNorm backward from ``parts`` partial input gradients, plus the residual's gradient."""
    if fused:
        return [ew("LN bwd + residual", rows, parts * 2 * width + 2 * r * width + 8, r * width, True)]
    return [ew("cast bwd", rows, 2 * width, 4 * width, False),
            ew("layer_norm bwd", rows, 4 * width + r * width + 8, r * width, False),
            ew("residual grad add", rows, 2 * r * width, r * width, False)]


def attention_sublayer(w: Workload, design: Design, level: str, rows: int, seqs: int, n: int, width: int,
                       r: int, grad: bool) -> Part:
    """LN, Q/K/V projections, attention, W_o, dropout and the residual of one layer over ``rows`` tokens."""
    c = w.config
    inner = c.num_heads * c.head_dim
    drop = c.dropout > 0
    fused = design.compiled
    part = Part(f"{level} attention sublayer")
    if level == "F-TRS" and design.frame_block == "fused":
        # One kernel each way (kernels/attention_block): x in, out out; backward writes dQKV, A, xn and dZ for
        # the cuBLAS weight gradients.
        proj = 2.0 * rows * width * 4 * inner + 4.0 * rows * n * inner
        part.fwd.append(Kernel("fused block fwd", rows * 2 * width * r, proj, fused=True))
        if grad:
            part.bwd += [Kernel("fused block bwd", rows * (3 * width * r + 2 * (3 * inner + inner + 2 * width)),
                                2.5 * proj, fused=True),
                         wgrad("dW_qkv", rows, 3 * inner, width), wgrad("dW_o", rows, width, inner)]
        return part
    three = design.attention != "ours"  # the peers run three projections; ours one [3I, C] GEMM
    part.fwd += ln_head(rows, width, r, fused)
    part.fwd += ([gemm(f"{p} GEMM", rows, width, inner, 2, 2) for p in "QKV"] if three
                 else [gemm("QKV GEMM", rows, width, 3 * inner, 2, 2)])
    if design.attention == "naive" and not fused:
        sc = c.num_heads * n * n * 2.0 * seqs  # [H, N, N] bf16 scores of every sequence
        act = rows * inner * 2.0
        part.fwd += [Kernel("q * scale", 2 * act), Kernel("Q K^T", 2 * act + sc, 2.0 * seqs * n * n * inner),
                     Kernel("masked_fill", 2 * sc), Kernel("softmax", 2 * sc),
                     Kernel("P V", sc + 2 * act, 2.0 * seqs * n * n * inner), Kernel("transpose copy", 2 * act)]
    else:
        part.fwd.append(Kernel(f"attention fwd ({design.attention})",
                               fixed_s=attention_time(w, design, n, seqs, "fwd")))
        if design.attention != "ours":  # SDPA's [B, H, N, D] output made [B, N, H * D] for W_o
            part.fwd.append(ew("transpose copy", rows, 2 * inner, 2 * inner, fused))
    if fused and design.epilogues:
        part.fwd.append(gemm("W_o GEMM + dropout + residual", rows, inner, width, 2, r, True,
                             extra_read=r * width + (width if drop else 0)))
    else:
        part.fwd += [gemm("W_o GEMM", rows, inner, width, 2, 2), *dropout_residual(rows, width, r, drop, fused)]
    if not grad:
        return part
    part.bwd.append(ew("dropout bwd + cast" if fused else "cast + dropout bwd", rows, r * width + drop * width,
                       2 * width, fused))
    part.bwd += [gemm("dA = dZ W_o", rows, width, inner, 2, 2), wgrad("dW_o", rows, width, inner)]
    if design.attention == "naive" and not fused:
        sc = c.num_heads * n * n * 2.0 * seqs
        act = rows * inner * 2.0
        mm = 2.0 * seqs * n * n * inner
        part.bwd += [Kernel("transpose copy", 2 * act), Kernel("dP = dO V^T", 2 * act + sc, mm),
                     Kernel("dV = P^T dO", sc + 2 * act, mm), Kernel("softmax bwd", 3 * sc),
                     Kernel("masked_fill bwd", 2 * sc), Kernel("dQ = dS K", sc + 2 * act, mm),
                     Kernel("dK = dS^T Q", sc + 2 * act, mm), Kernel("scale bwd", 2 * act)]
    else:
        if design.attention != "ours":
            part.bwd.append(ew("transpose copy", rows, 2 * inner, 2 * inner, fused))
        part.bwd.append(Kernel(f"attention bwd ({design.attention})",
                               fixed_s=attention_time(w, design, n, seqs, "bwd")))
    if three:
        for p in "QKV":
            part.bwd += [gemm(f"dxn from d{p}", rows, inner, width, 2, 2), wgrad(f"dW_{p.lower()}", rows, inner,
                                                                                  width)]
        if not fused:
            part.bwd += [ew("dxn accumulate", rows, 4 * width, 2 * width, False)] * 2
    else:
        part.bwd += [gemm("dxn = dQKV W", rows, 3 * inner, width, 2, 2), wgrad("dW_qkv", rows, 3 * inner, width)]
    part.bwd += ln_residual_bwd(rows, width, r, 3 if three and fused else 1, fused)
    return part


def ffn_sublayer(w: Workload, design: Design, level: str, rows: int, width: int, hidden: int, r: int,
                 grad: bool) -> Part:
    """LN, fc1 + GELU, fc2, dropout and the residual of one layer over ``rows`` tokens."""
    drop = w.config.dropout > 0
    part = Part(f"{level} FFN sublayer")
    flops = 2.0 * rows * 2 * width * hidden
    if design.ffn == "fused":
        # One kernel each way: x in, out out (+ LN statistics); the backward recomputes LN, fc1 and GELU and
        # writes xn, GELU(h), dh and dz for the two cuBLAS weight gradients.
        part.fwd.append(Kernel("fused FFN fwd", rows * (2 * r * width + 8), flops, fused=True))
        if grad:
            part.bwd += [Kernel("fused FFN bwd", rows * (3 * r * width + 8 + 2 * (2 * width + 2 * hidden)),
                                2 * flops + flops / 2, fused=True),
                         wgrad("dW1", rows, hidden, width), wgrad("dW2", rows, width, hidden)]
        return part
    fused = design.compiled
    part.fwd += ln_head(rows, width, r, fused)
    if fused and design.epilogues:
        part.fwd += [gemm("fc1 + bias + GELU", rows, width, hidden, 2, 2, True),
                     gemm("fc2 + bias + dropout + residual", rows, hidden, width, 2, r, True,
                          extra_read=r * width + drop * width)]
    else:
        part.fwd += [gemm("fc1 (addmm)", rows, width, hidden, 2, 2), ew("GELU", rows, 2 * hidden, 2 * hidden, fused),
                     gemm("fc2 (addmm)", rows, hidden, width, 2, 2), *dropout_residual(rows, width, r, drop, fused)]
    if not grad:
        return part
    part.bwd += [ew("dropout bwd + cast", rows, r * width + drop * width, 2 * width, fused),
                 gemm("dg = dz W2", rows, width, hidden, 2, 2), wgrad("dW2", rows, width, hidden),
                 ew("db2", rows, 2 * width, 0, fused),
                 ew("GELU bwd", rows, 4 * hidden, 2 * hidden, fused), ew("db1", rows, 2 * hidden, 0, fused),
                 gemm("dxn = dh W1", rows, hidden, width, 2, 2), wgrad("dW1", rows, hidden, width)]
    part.bwd += ln_residual_bwd(rows, width, r, 1, fused)
    return part


def level_parts(w: Workload, design: Design) -> list[Part]:
    """Input maps, sublayers and gathers of F-TRS, C-TRS and V-TRS."""
    c = w.config
    parts = []
    frames = w.frame_tokens // c.num_joints
    # F-TRS: the joint embedding, then the layers. Its stream is bf16 when the fused embedding writes it (the
    # kernel's output dtype under autocast), fp32 when the reference's LayerNorm + positional add write it.
    emb = Part("F-TRS joint embedding")
    if design.embedding == "kernel" or design.compiled:
        key = "embedding_ours" if design.embedding == "kernel" else "embedding_compiled"
        t = MEASURED_H200[key] * 1e-3 * frames / 8192
        emb.fwd.append(Kernel("embedding fwd+bwd (measured)", fixed_s=t))
        frame_r = 2 if design.embedding == "kernel" else 4
    else:
        t = MEASURED_H200["embedding_eager"] * 1e-3 * frames / 8192
        emb.fwd += [Kernel("embedding (eager, measured total)", fixed_s=t)] + [Kernel("eager op", fixed_s=0.0)] * 3
        emb.bwd += [Kernel("eager op", fixed_s=0.0)] * 6
        frame_r = 4
    parts.append(emb)
    rows = w.frame_tokens
    for _ in range(c.frame_layers):
        parts.append(attention_sublayer(w, design, "F-TRS", rows, frames, c.num_joints, c.frame_dim, frame_r, True))
        parts.append(ffn_sublayer(w, design, "F-TRS", rows, c.frame_dim, c.frame_ffn, frame_r, True))
    # C-TRS: gather the clips' frames, input map + 2-D positions, CLS; layers with and without a graph.
    n = c.clip_tokens
    r = design.residual
    for clips, grad in ((w.grad_clips, True), (w.nograd_clips, False)):
        if not clips:
            continue
        rows = clips * n
        inp = Part("C-TRS clip gather + input map" + ("" if grad else " (no grad)"))
        gathered = clips * (n - 1)
        inp.fwd += [ew("gather clip frames", gathered, 2 * c.frame_dim, 2 * c.frame_dim, design.compiled),
                    gemm("input map", gathered, c.frame_dim, c.clip_dim, 2, 2),
                    ew("+ positions, CLS", rows, 2 * c.clip_dim, 2 * r * c.clip_dim, design.compiled)]
        if grad:
            inp.bwd += [ew("positions / CLS grads", rows, r * c.clip_dim, 2 * c.clip_dim, design.compiled),
                        gemm("input map dX", gathered, c.clip_dim, c.frame_dim, 2, 2),
                        wgrad("input map dW", gathered, c.clip_dim, c.frame_dim),
                        ew("scatter-add into frame grads", gathered, 4 * c.frame_dim, 2 * c.frame_dim,
                           design.compiled)]
        parts.append(inp)
        for _ in range(c.clip_layers):
            parts.append(attention_sublayer(w, design, "C-TRS", rows, clips, n, c.clip_dim, r, grad))
            parts.append(ffn_sublayer(w, design, "C-TRS", rows, c.clip_dim, c.clip_ffn, r, grad))
    if w.video_sequences:
        seqs, n = w.video_sequences, w.clips  # W - 1 context clips + CLS
        rows = seqs * n
        inp = Part("V-TRS input map")
        inp.fwd += [gemm("input map", rows, c.clip_dim, c.video_dim, 2, 2),
                    ew("+ positions, CLS", rows, 2 * c.video_dim, 2 * r * c.video_dim, design.compiled)]
        inp.bwd += [gemm("input map dX", rows, c.video_dim, c.clip_dim, 2, 2),
                    wgrad("input map dW", rows, c.video_dim, c.clip_dim)]
        parts.append(inp)
        vdesign = replace(design, attention="cudnn" if design.attention == "naive" else design.attention)
        for _ in range(c.video_layers):
            parts.append(attention_sublayer(w, vdesign, "V-TRS", rows, seqs, n, c.video_dim, r, True))
            parts.append(ffn_sublayer(w, design, "V-TRS", rows, c.video_dim, c.video_ffn, r, True))
    return parts


def pretext_part(w: Workload, design: Design, launches: dict[str, int]) -> Part:
    """The pretext sampling, the heads and the losses: a few passes over ``[B, T, V]`` and the pose head's read of
    the frame features; launches as :func:`count_pretext_launches` counts them (eager, or what Inductor keeps)."""
    c = w.config
    part = Part("pretext sampling, heads, losses")
    raw = w.batch * w.frames * c.num_joints
    # Bytes: a handful of passes over [B, T, V] (3 coordinates) and the pose head's read of the frame features.
    part.fwd.append(ew("pose head", raw, 2 * c.frame_dim, 6, design.compiled))
    part.bwd.append(ew("pose head bwd", raw, 6, 2 * c.frame_dim, design.compiled))
    part.fwd.append(ew("sampling passes", raw, 12 * 20, 0, design.compiled))
    key = "fused" if design.compiled else "eager"
    for _ in range(launches[f"{key}_fwd"]):
        part.fwd.append(Kernel("tiny op", fixed_s=0.0))
    for _ in range(launches[f"{key}_bwd"]):
        part.bwd.append(Kernel("tiny op", fixed_s=0.0))
    return part


def optimizer_part(parameters: int) -> Part:
    """Fused AdamW: read parameter, gradient and both moments, write parameter and moments (fp32)."""
    return Part("fused AdamW", fwd=[Kernel("AdamW", 7 * 4 * parameters, fused=True)])


@functools.cache
def count_pretext_launches(config: HiTRSConfig, batch: int = 2, frames: int = 40) -> dict[str, int]:
    """Launches of one eager step outside the encoder levels, counted on the CPU (a small batch: the count does
    not depend on the batch size).

    Every ATen op that makes a new tensor counts as one launch (views, detach and metadata ops count none);
    ops inside the frame, clip and video encoders are excluded (the levels are modelled above). ``fused_*``: the
    ops Inductor keeps as their own kernels (reductions, scans, sorts, gathers, scatters, matmuls); pointwise ops
    fuse into them.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from hitrs_fast.pretext import HiTRSForPretraining
    from hitrs_fast.sampling import SampleRandom

    views = {"view", "_unsafe_view", "transpose", "permute", "expand", "slice", "select", "unsqueeze", "squeeze",
             "as_strided", "alias", "detach", "t", "unbind", "split", "split_with_sizes", "lift_fresh", "unfold",
             "diagonal", "view_as", "expand_as", "reshape", "narrow", "empty", "_local_scalar_dense", "sym_size",
             "sym_stride", "sym_numel", "is_same_size", "resolve_conj", "resolve_neg"}
    kept = ("sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "cumsum", "sort", "topk", "gather",
            "index", "index_put", "scatter", "scatter_add", "mm", "addmm", "bmm", "repeat_interleave", "nll_loss",
            "_log_softmax", "logsumexp", "linalg_vector_norm", "norm", "any", "all", "nonzero", "embedding")
    counts = {"eager_fwd": 0, "eager_bwd": 0, "fused_fwd": 0, "fused_bwd": 0}
    state = {"inside": 0, "phase": "fwd"}

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__.rstrip("_")
            if not state["inside"] and name not in views:
                counts[f"eager_{state['phase']}"] += 1
                if name in kept:
                    counts[f"fused_{state['phase']}"] += 1
            return func(*args, **(kwargs or {}))

    # The ops outside the levels depend on the pretext settings, not on widths or depths: a narrow, one-layer model
    # with the same settings launches the same ones, in seconds.
    config = config.replace(frame_dim=8, clip_dim=8, video_dim=8, frame_ffn=8, clip_ffn=8, video_ffn=8,
                            frame_layers=1, clip_layers=1, video_layers=1, num_heads=1, head_dim=8)
    torch.manual_seed(0)
    model = HiTRSForPretraining(config, backend="torch").train()
    levels = (model.encoder.frame_encoder, model.encoder.clip_encoder, model.encoder.video_encoder)
    enter = lambda *_: state.__setitem__("inside", state["inside"] + 1)  # noqa: E731
    leave = lambda *_: state.__setitem__("inside", state["inside"] - 1)  # noqa: E731
    for module in levels:  # forward hooks bracket a level's forward, backward hooks its backward
        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)
        module.register_full_backward_pre_hook(enter)
        module.register_full_backward_hook(leave)
    # x requires a gradient only so that F-TRS's input does and its backward hooks bracket its backward (a hook
    # on a module without an input gradient fires with its pre-hook); the few extra ops into x are counted.
    x = (0.3 * torch.randn(batch, frames, config.num_joints, config.in_channels)).requires_grad_()
    lengths = torch.full((batch,), frames)
    with Counter():
        out = model(x, lengths, generator=SampleRandom(0, torch.arange(batch)))
        state["phase"] = "bwd"
        out["loss"].backward()
    return counts


# ---- prediction ---------------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    design: Design
    parts: list[Part]
    gpu_s: float
    host_s: float
    launches: int
    bytes: float
    flops: float

    @property
    def step_s(self) -> float:
        return max(self.gpu_s, self.host_s)


def predict(w: Workload, design: Design, m: Machine, launches: dict[str, int], parameters: int) -> Prediction:
    parts = level_parts(w, design) + [pretext_part(w, design, launches), optimizer_part(parameters)]
    kernels = [k for p in parts for k in p.kernels()]
    gpu = sum(k.gpu_s(m) for k in kernels)
    n = len(kernels)
    if not design.compiled:
        host = n * m.host_eager_s
    elif design.cuda_graphs:
        host = 2 * (1 + 1) * m.host_graph_s + m.host_compiled_s  # forward and backward graphs, optimizer
    else:
        host = n * m.host_compiled_s
    return Prediction(design, parts, gpu, host, n, sum(k.bytes for k in kernels), sum(k.flops for k in kernels))


def _bisect(f, lo: float, hi: float, target: float, increasing: bool) -> float:
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@functools.cache
def calibrate(base: Machine = H200) -> Machine:
    """``eff_eager``, ``eff_fused`` and ``host_eager_s`` fitted to the measured H200 rows (see the module
    docstring); every other value of ``base`` stays."""
    cfg = HiTRSConfig.preset("official")
    one = Workload(cfg, 1, 7)  # shapes only: 8192 C-TRS sequences below
    seqs, n = 8192, cfg.clip_tokens
    rows = seqs * n

    def sublayer_s(m: Machine, design: Design) -> float:
        p = attention_sublayer(one, design, "C-TRS", rows, seqs, n, cfg.clip_dim, 2, True)
        return sum(k.gpu_s(m) for k in p.kernels())

    def sublayer_fwd_s(m: Machine, design: Design) -> float:
        p = attention_sublayer(one, design, "C-TRS", rows, seqs, n, cfg.clip_dim, 2, True)
        return sum(k.gpu_s(m) for k in p.fwd)

    ours = Design("ours", "ours")
    compiled_sdpa = Design("compile+sdpa", "cudnn", compiled=True)
    # GEMM rate and eager efficiency from the eager sublayer's forward and forward + backward (two rows, two
    # unknowns: least squares of the relative errors over a grid); then the fused efficiency from the compiled one.
    fwd_ms, full_ms = MEASURED_H200["sublayer_ours_split"]

    def error(rate: float, eff: float) -> float:
        m = replace(base, gemm_rate=rate, eff_eager=eff)
        return ((sublayer_fwd_s(m, ours) * 1e3 / fwd_ms - 1) ** 2 + (sublayer_s(m, ours) * 1e3 / full_ms - 1) ** 2)

    coarse = [(rate, eff) for rate in range(100, 990, 40) for eff in range(10, 101, 5)]
    rate, eff = min(coarse, key=lambda g: error(g[0] * 1e12, g[1] / 100))
    fine = [(r, e) for r in range(max(100, rate - 40), min(989, rate + 40) + 1, 5)
            for e in range(max(10, eff - 5), min(100, eff + 5) + 1)]
    rate, eff = min(fine, key=lambda g: error(g[0] * 1e12, g[1] / 100))
    gemm_rate, eff_eager = rate * 1e12, eff / 100
    m = replace(base, gemm_rate=gemm_rate, eff_eager=eff_eager)
    eff_fused = _bisect(lambda e: sublayer_s(replace(m, eff_fused=e), compiled_sdpa), 0.05, 1.0,
                        MEASURED_H200["sublayer_compile_sdpa"][1] * 1e-3, increasing=False)
    m = replace(m, eff_fused=eff_fused)
    w = Workload(cfg, 64, 100)
    launches = count_pretext_launches(cfg)
    params = _parameters(cfg)
    triton_eager = next(d for d in DESIGNS if d.measured == "step_triton_eager")
    target = MEASURED_H200["step_triton_eager"] * 1e-3
    gpu = predict(w, triton_eager, m, launches, params).gpu_s
    if gpu < target:  # host-bound: the host cost per op that makes the step take what it measured
        host = _bisect(lambda h: predict(w, triton_eager, replace(m, host_eager_s=h), launches, params).step_s,
                       1e-7, 1e-3, target, increasing=True)
        m = replace(m, host_eager_s=host)
    return m


def _parameters(cfg: HiTRSConfig) -> int:
    from hitrs_fast.models import expected_encoder_parameters

    c = cfg
    heads = c.frame_dim * c.in_channels + c.clip_dim * 2 + c.video_dim * 2 + c.video_dim * c.clip_dim
    return expected_encoder_parameters(c) + heads


def machines() -> dict[str, Machine]:
    """The calibrated H200 and an H100 scaled from it by an assumed 3.0 TB/s copy bandwidth (unmeasured)."""
    h200 = calibrate()
    h100 = replace(h200, name="H100 (scaled: 3.0 TB/s copy assumed)", copy_bandwidth=3.0e12,
                   attention_scale=h200.copy_bandwidth / 3.0e12)
    return {"H200": h200, "H100": h100}


def floor_s(w: Workload, m: Machine, launches: dict[str, int], parameters: int) -> float:
    """The byte floor of the best modelled design at the full copy bandwidth, attention at its own floor."""
    best = replace(DESIGNS[-1], name="floor")
    p = predict(w, best, replace(m, eff_fused=1.0, eff_eager=1.0, gap_s=0.0), launches, parameters)
    c = w.config
    inner = c.num_heads * c.head_dim
    attn_bytes = 0.0
    for clips, grad in ((w.grad_clips, True), (w.nograd_clips, False)):
        attn_bytes += c.clip_layers * clips * c.clip_tokens * inner * 2 * (4 + (8 if grad else 0))
    fixed = sum(k.fixed_s * m.attention_scale for part in p.parts for k in part.kernels() if k.fixed_s)
    return p.gpu_s - fixed + attn_bytes / m.copy_bandwidth


def calibration() -> list[tuple[str, float, float]]:
    """(row, predicted ms, measured ms) of every measured row the calibrated H200 model reproduces or checks."""
    m = calibrate()
    cfg = HiTRSConfig.preset("official")
    w = Workload(cfg, 64, 100)
    launches = count_pretext_launches(cfg)
    params = _parameters(cfg)
    rows = []
    for d in DESIGNS:
        if d.measured:
            rows.append((f"step, {d.name}", predict(w, d, m, launches, params).step_s * 1e3,
                         MEASURED_H200[d.measured]))
    one = Workload(cfg, 1, 7)
    for key, design in (("sublayer_ours_split", Design("ours", "ours")),
                        ("sublayer_compile_sdpa", Design("c", "cudnn", compiled=True)),
                        ("sublayer_eager_sdpa", Design("e", "cudnn"))):
        p = attention_sublayer(one, design, "C-TRS", 8192 * cfg.clip_tokens, 8192, cfg.clip_tokens, cfg.clip_dim, 2,
                               True)
        rows.append((f"C-TRS attention sublayer fwd, {key}", sum(k.gpu_s(m) for k in p.fwd) * 1e3,
                     MEASURED_H200[key][0]))
        rows.append((f"C-TRS attention sublayer fwd+bwd, {key}", sum(k.gpu_s(m) for k in p.kernels()) * 1e3,
                     MEASURED_H200[key][1]))
    return rows


def report(preset: str = "official", batch: int = 64, frames: int = 100, machine: str = "H200",
           detail: str | None = None) -> str:
    cfg = HiTRSConfig.preset(preset)
    w = Workload(cfg, batch, frames)
    ms = machines()
    m = ms[machine]
    launches = count_pretext_launches(cfg)
    params = _parameters(cfg)
    preds = [predict(w, d, m, launches, params) for d in DESIGNS]
    peers = [p for p in preds if p.design.name.startswith("peer:")]
    best_peer = min(peers, key=lambda p: p.step_s)
    lines = [f"**One pre-training step, {preset} preset, {batch} x {frames} frames, bf16; {m.name} (fitted: GEMMs "
             f"{m.gemm_rate / 1e12:.0f} TFLOP/s, eager kernels {m.eff_eager:.0%} and fused kernels "
             f"{m.eff_fused:.0%} of copy bandwidth, eager op {m.host_eager_s * 1e6:.1f} us on the host); "
             "predicted**", "",
             "| design | launches | HBM GB | GFLOP | GPU ms | host ms | step ms | samples/s | vs best peer |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(preds, key=lambda p: p.step_s):
        lines.append(f"| {p.design.name} | {p.launches} | {p.bytes / 1e9:.1f} | {p.flops / 1e9:.0f} | "
                     f"{p.gpu_s * 1e3:.1f} | {p.host_s * 1e3:.1f} | {p.step_s * 1e3:.1f} | "
                     f"{batch / p.step_s:,.0f} | {best_peer.step_s / p.step_s:.2f}x |")
    floor = floor_s(w, m, launches, params)
    lines += ["", f"Floor (every byte once at the copy bandwidth, attention at its byte floor, no gaps): "
              f"{floor * 1e3:.1f} ms ({batch / floor:,.0f} samples/s)."]
    if detail:
        p = next(p for p in preds if p.design.name == detail)
        lines += ["", f"**{detail}: by part** (GPU ms)", "", "| part | kernels | HBM GB | GPU ms |",
                  "|---|---|---|---|"]
        merged: dict[str, list[float]] = {}
        for part in p.parts:
            ks = part.kernels()
            acc = merged.setdefault(part.name, [0, 0.0, 0.0])
            acc[0] += len(ks)
            acc[1] += sum(k.bytes for k in ks)
            acc[2] += sum(k.gpu_s(m) for k in ks)
        for name, (k, b, t) in sorted(merged.items(), key=lambda kv: -kv[1][2]):
            lines.append(f"| {name} | {k} | {b / 1e9:.2f} | {t * 1e3:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="official")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--machine", default="H200", choices=["H200", "H100"])
    parser.add_argument("--parts", default=None, metavar="DESIGN", help="one design, part by part")
    parser.add_argument("--count-launches", action="store_true", help="print the eager step's pretext launches")
    args = parser.parse_args(argv)
    if args.count_launches:
        print(count_pretext_launches(HiTRSConfig.preset(args.preset)))
        return 0
    print("**Calibration (H200 rows, commit " + MEASURED_ROWS_COMMIT + ")**\n")
    print("| row | predicted ms | measured ms | ratio |\n|---|---|---|---|")
    for name, pred, meas in calibration():
        print(f"| {name} | {pred:.2f} | {meas:.2f} | {pred / meas:.2f} |")
    print()
    print(report(args.preset, args.batch, args.frames, args.machine, args.parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
