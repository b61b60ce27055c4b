"""Procedural synthetic motion on the NTU 25-joint skeleton: the built-in dataset of the main job.

Everything here is deterministic for a seed (numpy ``Generator`` seeded from ``SeedSequence`` keys, so a
sample does not depend on which other samples were generated) and written through
:func:`hitrs_fast.data.store.write_store`, so every pipeline reads it exactly like converted real data.

Model of one body sequence ``[T, V=25, C=3]`` (Kinect v2 order, metres, Kinect camera space: y up, z the
depth away from the sensor, ~2.3-3.8 m):

1. **Subject**: bone lengths = base adult lengths x a per-subject height factor x per-bone factors, the
   same on the left and right side (:func:`make_subject`).
2. **Pose**: local joint rotations ``[T, V, 3]`` (Euler x, y, z; ``R = Rz Ry Rx``) in a body frame with +x
   the body's right, +y up and +z backwards (the body faces -z, i.e. the camera). A non-periodic action is
   a chain of key postures with per-sample angles and phase durations, joined by eased moves; a periodic
   one is a few oscillating joint-angle curves inside a rest -> action -> rest envelope. An idle sway on
   the spine, shoulders, elbows and hips and a per-sample resting posture are added to every body.
3. **Forward kinematics** over :data:`~hitrs_fast.data.skeleton.KINEMATIC_PARENTS` (the NTU bone tree
   re-rooted at SpineBase), so bone lengths are exactly constant over time; the root is lowered/raised so
   the lower ankle stays on the floor (crouching, kicks).
4. **Camera**: the body is rotated about the vertical axis by the view angle (three camera groups at
   0 and +-35 degrees, +-10 degrees jitter), placed at x ~ U(-0.5, 0.5), depth z ~ U(2.3, 3.8), below a
   camera ~U(0.8, 1.2) m above the floor with a small pitch.
5. **Sensor noise** (``noise=True``): Gaussian jitter (sigma 3-8 mm, doubled on hand tips and thumbs) and
   occasional short "inferred joint" glitches where a distal joint collapses towards its parent for 2-8
   frames, as Kinect does when it loses a hand or foot.

The 16 actions (:data:`ACTIONS`; generator version 3 changed the long set only) are built so that telling
them apart needs what a hierarchical encoder exists to learn, as real data does (NTU-60 has sit down /
stand up, put on / take off a jacket, a shoe, glasses, a hat, and mostly multi-phase actions such as drink
water):

- non-periodic multi-phase actions (drink water: reach, lift, tilt the head and drink, lower, put back);
- time-reversed pairs (:data:`REVERSED_PAIRS`: sit down / stand up, put on / take off a hat, put on / take
  off glasses, pick up / put down): the second class is the first one's joint-angle curves played
  backwards, so only the direction of time separates them;
- two classes that differ only in the order of their phases (stretch-bow-kick / bow-stretch-kick);
- periodic actions as a minority (wave, clap, walk in place);
- two-person interactions (handshake, push): a partner in body slot 1 facing the actor, moving with it.

Store kinds (:func:`write_synthetic`):

- ``"trimmed"``: one action per sample, 40-120 frames, label = class id, ``train``/``test`` split by subject;
- ``"untrimmed"``: 3-6 actions separated by idle motion, per-frame labels (0 = background, class k -> k+1),
  label -1, for temporal detection;
- ``"long"``: several hundred frames of back-to-back actions with short idle gaps (per-frame labels kept),
  label -1, for motion prediction. So that the future follows from the past as in real motion, one
  performer's pace runs through the whole sequence (generator version 3): one tempo and effort level for
  every action, phases exactly as long as the tempo says (no per-phase factor), pauses of 0.4 s at the
  tempo; half of the actions are periodic (wave, clap, walk in place, 4-8 s each: long recordings of real
  motion are dominated by repetitive movement). Trimmed and untrimmed samples are those of version 2.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hitrs_fast.data.skeleton import JOINT_INDEX, KINEMATIC_ORDER, KINEMATIC_PARENTS, NUM_JOINTS
from hitrs_fast.data.store import StoreSample, write_store

__all__ = [
    "ACTIONS",
    "FPS",
    "GENERATOR_VERSION",
    "INTERACTIONS",
    "KINDS",
    "PERIODIC_ACTIONS",
    "PHASE_ORDER_CLASSES",
    "REVERSED_PAIRS",
    "CameraPose",
    "Subject",
    "action_angles",
    "cached_synthetic",
    "forward_kinematics",
    "is_test_subject",
    "iter_synthetic",
    "make_subject",
    "rest_offsets",
    "sample_camera",
    "synthesize_body",
    "synthetic_cache_path",
    "synthetic_splits",
    "write_synthetic",
]

GENERATOR_VERSION = 3
FPS = 30
KINDS = ("trimmed", "untrimmed", "long")

ACTIONS: tuple[str, ...] = (
    "sit down",
    "stand up",
    "put on a hat",
    "take off a hat",
    "put on glasses",
    "take off glasses",
    "pick up",
    "put down",
    "drink water",
    "stretch-bow-kick",
    "bow-stretch-kick",
    "wave",
    "clap",
    "walk in place",
    "handshake",
    "push",
)
# base class -> the class that is the base played backwards
REVERSED_PAIRS: dict[str, str] = {
    "sit down": "stand up",
    "put on a hat": "take off a hat",
    "put on glasses": "take off glasses",
    "pick up": "put down",
}
PHASE_ORDER_CLASSES: tuple[str, str] = ("stretch-bow-kick", "bow-stretch-kick")
PERIODIC_ACTIONS: tuple[str, ...] = ("wave", "clap", "walk in place")
INTERACTIONS: tuple[str, ...] = ("handshake", "push")


_J = JOINT_INDEX
_SPINE_MID, _SPINE_SH, _NECK = _J["SpineMid"], _J["SpineShoulder"], _J["Neck"]
_SH_L, _EL_L, _SH_R, _EL_R = _J["ShoulderLeft"], _J["ElbowLeft"], _J["ShoulderRight"], _J["ElbowRight"]
_HIP_L, _KNEE_L, _ANK_L = _J["HipLeft"], _J["KneeLeft"], _J["AnkleLeft"]
_HIP_R, _KNEE_R, _ANK_R = _J["HipRight"], _J["KneeRight"], _J["AnkleRight"]

_ANKLE_HEIGHT = 0.08  # ankle joint above the floor when standing (metres)
_DEG = math.pi / 180.0

# Kinect tracks these distal joints worst; glitches and extra jitter go there.
_DISTAL = tuple(_J[n] for n in (
    "HandLeft", "HandRight", "WristLeft", "WristRight", "HandTipLeft", "HandTipRight", "ThumbLeft", "ThumbRight",
    "FootLeft", "FootRight", "AnkleLeft", "AnkleRight",
))
_HAND_EXTRAS = tuple(_J[n] for n in ("HandTipLeft", "HandTipRight", "ThumbLeft", "ThumbRight"))


# --------------------------------------------------------------------------------------------------
# Skeleton geometry
# --------------------------------------------------------------------------------------------------

def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _base_geometry() -> tuple[np.ndarray, np.ndarray]:
    """Rest directions ``[V, 3]`` (unit, body frame) and base bone lengths ``[V]`` (metres, ~1.75 m adult).

    Entry ``v`` describes the bone from ``KINEMATIC_PARENTS[v]`` to ``v``; the root's entry is zero.
    Left-side directions are the right-side ones with x negated (the body's left is -x).
    """
    dirs = np.zeros((NUM_JOINTS, 3))
    lengths = np.zeros(NUM_JOINTS)

    def put(name: str, d: tuple[float, float, float], length: float, mirror: bool = False) -> None:
        dirs[_J[name]] = _unit(d)
        lengths[_J[name]] = length
        if mirror:
            left = name.replace("Right", "Left")
            dirs[_J[left]] = _unit((-d[0], d[1], d[2]))
            lengths[_J[left]] = length

    put("SpineMid", (0.0, 1.0, 0.0), 0.28)
    put("SpineShoulder", (0.0, 1.0, 0.03), 0.24)
    put("Neck", (0.0, 1.0, 0.0), 0.07)
    put("Head", (0.0, 1.0, -0.05), 0.13)
    put("ShoulderRight", (1.0, -0.15, 0.0), 0.17, mirror=True)
    put("ElbowRight", (0.0, -1.0, 0.0), 0.27, mirror=True)
    put("WristRight", (0.0, -1.0, 0.0), 0.25, mirror=True)
    put("HandRight", (0.0, -1.0, 0.0), 0.07, mirror=True)
    put("HipRight", (1.0, -0.35, 0.0), 0.085, mirror=True)
    put("KneeRight", (0.0, -1.0, 0.0), 0.41, mirror=True)
    put("AnkleRight", (0.0, -1.0, 0.0), 0.39, mirror=True)
    put("FootRight", (0.0, -0.3, -1.0), 0.11, mirror=True)
    # The NTU tree hangs HandTip off Thumb (bone pair (22, 23)); place the thumb forward/inward of the hand
    # and the tip below the hand, and derive the Thumb -> HandTip bone from the two.
    thumb = 0.05 * _unit((-0.3, -0.5, -0.8))   # right hand: inward is -x
    tip = np.array([0.0, -0.08, 0.0])
    put("ThumbRight", tuple(thumb), float(np.linalg.norm(thumb)), mirror=True)
    put("HandTipRight", tuple(tip - thumb), float(np.linalg.norm(tip - thumb)), mirror=True)
    return dirs, lengths


_REST_DIRS, _BASE_LENGTHS = _base_geometry()


@dataclass(frozen=True)
class Subject:
    """A synthetic performer.

    Attributes:
        subject_id: 0-based id (stored as ``performer = subject_id + 1``, like NTU's 1-based P numbers).
        bone_lengths: ``[V]`` metres; ``bone_lengths[v] = |x[v] - x[KINEMATIC_PARENTS[v]]|`` (0 at the root).
    """

    subject_id: int
    bone_lengths: np.ndarray


def make_subject(subject_id: int, seed: int = 0) -> Subject:
    """Per-subject bone lengths: height factor U(0.88, 1.12) x per-bone factor U(0.94, 1.06), left = right."""
    if subject_id < 0:
        raise ValueError(f"subject_id must be >= 0, got {subject_id}")
    rng = np.random.default_rng([int(seed), 1, int(subject_id)])
    height = rng.uniform(0.88, 1.12)
    factors = rng.uniform(0.94, 1.06, size=NUM_JOINTS)
    for name in ("Shoulder", "Elbow", "Wrist", "Hand", "Hip", "Knee", "Ankle", "Foot", "Thumb", "HandTip"):
        factors[_J[name + "Left"]] = factors[_J[name + "Right"]]
    return Subject(subject_id=int(subject_id), bone_lengths=_BASE_LENGTHS * height * factors)


def rest_offsets(bone_lengths: np.ndarray) -> np.ndarray:
    """Rest-pose bone vectors ``[V, 3]`` in the body frame (child minus parent; zero at the root)."""
    bone_lengths = np.asarray(bone_lengths, dtype=np.float64)
    if bone_lengths.shape != (NUM_JOINTS,):
        raise ValueError(f"bone_lengths must have shape ({NUM_JOINTS},), got {bone_lengths.shape}")
    return _REST_DIRS * bone_lengths[:, None]


def _euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """``[..., 3]`` Euler angles (x, y, z, radians) -> ``[..., 3, 3]`` matrices ``Rz @ Ry @ Rx``."""
    cx, cy, cz = np.cos(angles[..., 0]), np.cos(angles[..., 1]), np.cos(angles[..., 2])
    sx, sy, sz = np.sin(angles[..., 0]), np.sin(angles[..., 1]), np.sin(angles[..., 2])
    r = np.empty((*angles.shape[:-1], 3, 3))
    r[..., 0, 0] = cz * cy
    r[..., 0, 1] = cz * sy * sx - sz * cx
    r[..., 0, 2] = cz * sy * cx + sz * sx
    r[..., 1, 0] = sz * cy
    r[..., 1, 1] = sz * sy * sx + cz * cx
    r[..., 1, 2] = sz * sy * cx - cz * sx
    r[..., 2, 0] = -sy
    r[..., 2, 1] = cy * sx
    r[..., 2, 2] = cy * cx
    return r


def forward_kinematics(offsets: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Joint positions ``[T, V, 3]`` (root at the origin) from rest bone vectors and local rotations.

    Args:
        offsets: ``[V, 3]`` rest bone vectors (:func:`rest_offsets`).
        rotations: ``[T, V, 3, 3]`` local rotation of each joint, applied to the bones leaving it; the
            root's rotation orients the whole body.
    """
    t = rotations.shape[0]
    glob = np.empty((t, NUM_JOINTS, 3, 3))
    pos = np.zeros((t, NUM_JOINTS, 3))
    for v in KINEMATIC_ORDER:
        p = KINEMATIC_PARENTS[v]
        if p < 0:
            glob[:, v] = rotations[:, v]
            continue
        pos[:, v] = pos[:, p] + glob[:, p] @ offsets[v]
        glob[:, v] = glob[:, p] @ rotations[:, v]
    return pos


# --------------------------------------------------------------------------------------------------
# Action curves
# --------------------------------------------------------------------------------------------------

@dataclass
class _Motion:
    """Joint-angle curves of one body over ``T`` frames (body frame)."""

    angles: np.ndarray  # [T, V, 3] local Euler angles, radians
    step: np.ndarray    # [T] displacement of the whole body along its own +z (backwards), metres

    @classmethod
    def zeros(cls, t: int) -> _Motion:
        return cls(np.zeros((t, NUM_JOINTS, 3)), np.zeros(t))

    @classmethod
    def of(cls, angles: np.ndarray) -> _Motion:
        """Joint angles of a body that stays in place."""
        return cls(angles, np.zeros(angles.shape[0]))

    def resampled(self, t: int) -> _Motion:
        """The same motion stretched or squeezed in time to ``t`` frames (linear interpolation)."""
        n = self.angles.shape[0]
        src = np.linspace(0.0, n - 1, t)
        lo = np.minimum(np.floor(src).astype(np.int64), n - 2)
        w = src - lo
        return _Motion(self.angles[lo] * (1 - w[:, None, None]) + self.angles[lo + 1] * w[:, None, None],
                       self.step[lo] * (1 - w) + self.step[lo + 1] * w)

    def reversed_in_time(self) -> _Motion:
        return _Motion(self.angles[::-1].copy(), self.step[::-1].copy())


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _envelope(t: int, ramp: float) -> np.ndarray:
    """0 -> 1 over ``ramp`` frames at the start and 1 -> 0 at the end: periodic actions begin and end at rest."""
    f = np.arange(t, dtype=np.float64)
    ramp = max(1.0, min(ramp, t / 3.0))
    return _smoothstep(f / ramp) * _smoothstep((t - 1 - f) / ramp)


def _pulse(phase: np.ndarray, sharpness: float) -> np.ndarray:
    """Positive half-waves of a sine raised to ``sharpness``: short strokes (steps)."""
    return np.maximum(np.sin(phase), 0.0) ** sharpness


# Postures are [V, 3] local Euler offsets in radians from the standing rest pose. Sign conventions (body
# frame: +x right, +y up, +z back): shoulder / hip / elbow flexion is +x (limb forward / up), knee flexion
# -x, trunk forward bend -x at SpineMid, head back +x at Neck; spreading an arm sideways is -z at
# ShoulderLeft and +z at ShoulderRight.

def _arms(p: np.ndarray, shoulder: float, elbow: float, spread: float = 0.0, twist: float = 0.0,
          side: str = "both") -> np.ndarray:
    """Adds shoulder flexion, elbow flexion, sideways spread and a twist of the upper arm that brings the
    forearm towards the midline (degrees) to one arm or both; returns ``p``."""
    for sh, el, sign, name in ((_SH_L, _EL_L, -1.0, "left"), (_SH_R, _EL_R, 1.0, "right")):
        if side in ("both", name):
            p[sh, 0] += shoulder * _DEG
            p[sh, 1] += sign * twist * _DEG
            p[sh, 2] += sign * spread * _DEG
            p[el, 0] += elbow * _DEG
    return p


def _legs(p: np.ndarray, hip: float, knee: float) -> np.ndarray:
    """Bends both legs (hip flexion, knee flexion in degrees) with the feet kept flat on the floor."""
    for hip_j, knee_j, ankle_j in ((_HIP_L, _KNEE_L, _ANK_L), (_HIP_R, _KNEE_R, _ANK_R)):
        p[hip_j, 0] += hip * _DEG
        p[knee_j, 0] -= knee * _DEG
        p[ankle_j, 0] = -(p[hip_j, 0] + p[knee_j, 0])
    return p


def _trunk(p: np.ndarray, bend: float, head: float = 0.0) -> np.ndarray:
    """Trunk pitch at SpineMid (negative: forward) and head pitch at Neck (positive: back), degrees."""
    p[_SPINE_MID, 0] += bend * _DEG
    p[_NECK, 0] += head * _DEG
    return p


def _rest() -> np.ndarray:
    return np.zeros((NUM_JOINTS, 3))


def _keyframes(start: np.ndarray, segments: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Eased piecewise interpolation through postures.

    Args:
        start: ``[V, 3]`` posture at frame 0.
        segments: ``(target posture, frames)``; segment k moves from the previous target to its own (a
            segment whose target equals the previous one is a hold). Smoothstep easing: the body comes to
            rest at every key posture.

    Returns:
        ``(angles [T, V, 3], knots [len(segments) + 1])``: T = the rounded total duration + 1, knot times in
        frames (0 .. T - 1).
    """
    durations = np.array([n for _, n in segments], dtype=np.float64)
    t = max(2, int(round(durations.sum()))) + 1
    knots = np.concatenate([[0.0], np.cumsum(durations) / durations.sum() * (t - 1)])
    keys = np.stack([start] + [p for p, _ in segments])  # [K + 1, V, 3]
    f = np.arange(t, dtype=np.float64)
    k = np.clip(np.searchsorted(knots, f, side="right") - 1, 0, len(segments) - 1)
    span = np.maximum(knots[k + 1] - knots[k], 1e-9)
    s = _smoothstep((f - knots[k]) / span)[:, None, None]
    return keys[k] + s * (keys[k + 1] - keys[k]), knots


@dataclass(frozen=True)
class _Pace:
    """How one performer moves through a whole "long" sequence: one tempo and one effort level for every
    action, and phases that last exactly as long as the tempo says (no per-phase factor), so that what a
    body has done so far tells when its next phase starts and ends, as in real motion."""

    tempo: float
    amp: float


class _Draw:
    """Per-sample random draws of one action: posture angles and phase durations.

    Without a ``pace`` (trimmed, untrimmed) the action draws its own effort level and tempo and every phase
    a factor U(0.8, 1.25); with one (long) it takes the sequence's effort and tempo and no per-phase factor.
    """

    def __init__(self, rng: np.random.Generator, pace: _Pace | None = None) -> None:
        self.rng = rng
        self.steady = pace is not None
        if pace is None:
            self.amp = rng.uniform(0.85, 1.15)    # one effort level per sample scales every posture
            self.tempo = rng.uniform(0.85, 1.25)   # and one tempo stretches every phase
        else:
            self.amp, self.tempo = pace.amp, pace.tempo

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def dur(self, seconds: float) -> float:
        """Frames of a phase of nominal length ``seconds``: the sample's tempo, x a per-phase factor
        U(0.8, 1.25) unless the draw is steady (phases differ in speed from sample to sample)."""
        if self.steady:
            return seconds * FPS * self.tempo
        return seconds * FPS * self.tempo * float(self.rng.uniform(0.8, 1.25))

    def pose(self, p: np.ndarray) -> np.ndarray:
        return p * self.amp


def _sit_down(d: _Draw) -> _Motion:
    """Lean forward, lower into a deep crouch, settle back and stay down (ends crouched)."""
    hip, knee = d.u(85, 100), d.u(100, 120)
    arms = d.u(30, 60)
    lean = d.pose(_arms(_legs(_trunk(_rest(), -d.u(30, 40)), d.u(25, 35), d.u(20, 30)), d.u(15, 30), 10))
    down = d.pose(_arms(_legs(_trunk(_rest(), -d.u(20, 30)), hip, knee), arms, d.u(10, 40)))
    settled = d.pose(_arms(_legs(_trunk(_rest(), -d.u(5, 15)), hip, knee), arms * 0.6, d.u(10, 40)))
    angles, _ = _keyframes(_rest(), [(_rest(), d.dur(0.45)), (lean, d.dur(0.5)), (down, d.dur(0.9)),
                                     (settled, d.dur(0.35)), (settled, d.dur(0.6))])
    return _Motion.of(angles)


def _put_on_hat(d: _Draw) -> _Motion:
    """Hold the hat at the chest, lift it above the head, pull it down onto the head, drop the arms."""
    chest = d.pose(_arms(_rest(), d.u(35, 50), d.u(85, 105), -5))
    above = d.pose(_arms(_rest(), d.u(150, 170), d.u(40, 60), 10))
    on_head = d.pose(_arms(_rest(), d.u(110, 120), d.u(105, 115), d.u(10, 20), d.u(45, 60)))
    angles, _ = _keyframes(chest, [(chest, d.dur(0.4)), (above, d.dur(0.85)), (above, d.dur(0.2)),
                                   (on_head, d.dur(0.5)), (on_head, d.dur(0.4)), (_rest(), d.dur(0.7)),
                                   (_rest(), d.dur(0.4))])
    return _Motion.of(angles)


def _put_on_glasses(d: _Draw) -> _Motion:
    """Unfold the glasses at the chest, bring them to the face, push them up with the right hand, lower the
    left arm, then the right."""
    chest = d.pose(_arms(_rest(), d.u(20, 30), d.u(100, 115)))
    face = d.pose(_arms(_rest(), d.u(75, 85), d.u(125, 135), d.u(5, 15), d.u(30, 45)))
    push = face + d.pose(_arms(_rest(), d.u(8, 15), d.u(8, 15), side="right"))
    left_down = push.copy()
    left_down[[_SH_L, _EL_L]] = 0.0
    angles, _ = _keyframes(_rest(), [(_rest(), d.dur(0.3)), (chest, d.dur(0.45)), (chest, d.dur(0.35)),
                                     (face, d.dur(0.65)), (face, d.dur(0.25)), (push, d.dur(0.3)),
                                     (push, d.dur(0.25)), (left_down, d.dur(0.55)), (_rest(), d.dur(0.6)),
                                     (_rest(), d.dur(0.3))])
    return _Motion.of(angles)


def _pick_up(d: _Draw) -> _Motion:
    """Bend down, reach the floor, grasp, stand up holding the object at the waist (ends holding)."""
    floor = d.pose(_arms(_legs(_trunk(_rest(), -d.u(60, 75), -10), d.u(30, 45), d.u(35, 55)),
                         d.u(60, 80), d.u(0, 15)))
    waist = d.pose(_arms(_rest(), d.u(25, 40), d.u(70, 90), -8))
    angles, _ = _keyframes(_rest(), [(_rest(), d.dur(0.3)), (floor, d.dur(0.8)), (floor, d.dur(0.4)),
                                     (waist, d.dur(0.8)), (waist, d.dur(0.5))])
    return _Motion.of(angles)


def _drink_water(d: _Draw) -> _Motion:
    """Reach for the cup, bring it to the mouth, tilt the head back and drink, lower it, put it back."""
    reach = d.pose(_arms(_rest(), d.u(50, 65), d.u(10, 25), side="right"))
    mouth = d.pose(_arms(_rest(), d.u(45, 55), d.u(125, 135), 0, d.u(50, 65), side="right"))
    tilt = mouth + d.pose(_arms(_trunk(_rest(), 0, d.u(15, 25)), d.u(10, 20), 0, side="right"))
    angles, _ = _keyframes(_rest(), [(_rest(), d.dur(0.2)), (reach, d.dur(0.55)), (reach, d.dur(0.15)),
                                     (mouth, d.dur(0.6)), (mouth, d.dur(0.1)), (tilt, d.dur(0.3)),
                                     (tilt, d.dur(0.5)), (mouth, d.dur(0.3)), (reach, d.dur(0.5)),
                                     (reach, d.dur(0.1)), (_rest(), d.dur(0.5)), (_rest(), d.dur(0.2))])
    return _Motion.of(angles)


def _exercise(d: _Draw, order: tuple[str, ...]) -> _Motion:
    """Three moves, each from rest to a posture and back, in ``order``. The moves and their timings are drawn
    in one fixed order, so two classes with the same moves differ only in the order of their phases."""
    bend = d.u(45, 65)
    moves = {  # posture, move, hold, return, pause
        "stretch": (d.pose(_arms(_trunk(_rest(), 5), d.u(160, 175), d.u(0, 10), d.u(5, 20))),
                    d.dur(0.75), d.dur(0.2), d.dur(0.65), d.dur(0.1)),
        "bow": (d.pose(_arms(_trunk(_rest(), -bend, -15), 0.7 * bend, 0)),
                d.dur(0.6), d.dur(0.2), d.dur(0.55), d.dur(0.1)),
        "kick": (d.pose(_kick_posture(d)), d.dur(0.4), d.dur(0.1), d.dur(0.45), d.dur(0.1)),
    }
    segments: list[tuple[np.ndarray, float]] = [(_rest(), d.dur(0.15))]
    for name in order:
        pose, move, hold, back, pause = moves[name]
        segments += [(pose, move), (pose, hold), (_rest(), back), (_rest(), pause)]
    angles, _ = _keyframes(_rest(), segments)
    return _Motion.of(angles)


def _kick_posture(d: _Draw) -> np.ndarray:
    """Right leg kicked forward and straight, trunk leaning back, left arm forward for balance."""
    p = _trunk(_rest(), 10)
    p[_HIP_R, 0] += d.u(60, 85) * _DEG
    p[_KNEE_R, 0] -= d.u(0, 10) * _DEG
    _arms(p, 25, 0, side="left")
    return _arms(p, -15, 0, side="right")


def _periodic_frames(d: _Draw) -> tuple[int, np.ndarray, float]:
    """Length (40-120 frames; steady draws, i.e. the long set: :data:`_LONG_PERIODIC_FRAMES`), time axis in
    seconds scaled by the tempo, and a phase of a periodic action."""
    t = int(d.rng.integers(*(_LONG_PERIODIC_FRAMES if d.steady else (40, 121))))
    return t, np.arange(t, dtype=np.float64) / FPS / d.tempo, float(d.rng.uniform(0.0, 2.0 * math.pi))


def _wave(d: _Draw) -> _Motion:
    """Periodic: the right forearm swings in the frontal plane about a bent elbow, arm raised sideways."""
    t, sec, phase = _periodic_frames(d)
    m = _Motion.zeros(t)
    env = _envelope(t, max(12.0, d.u(0.1, 0.3) * t))
    w = 2.0 * math.pi * d.u(1.6, 2.4) * sec + phase
    m.angles[:, _SH_R, 2] += env * d.u(100, 160) * _DEG * d.amp
    m.angles[:, _SH_R, 0] += env * d.u(0, 20) * _DEG
    m.angles[:, _EL_R, 2] += -env * (d.u(10, 45) + d.amp * 28 * np.sin(w)) * _DEG
    return m


def _clap(d: _Draw) -> _Motion:
    """Periodic: arms forward, hands open and close in front of the chest."""
    t, sec, phase = _periodic_frames(d)
    m = _Motion.zeros(t)
    env = _envelope(t, max(12.0, d.u(0.1, 0.3) * t))
    w = 2.0 * math.pi * d.u(1.8, 2.6) * sec + phase
    shoulder, elbow = d.u(55, 85), d.u(5, 35)
    m.angles[:, [_SH_L, _SH_R], 0] += (env * shoulder * _DEG)[:, None]
    m.angles[:, [_EL_L, _EL_R], 0] += (env * elbow * _DEG)[:, None]
    opening = (8.0 + d.amp * 32.0 * (0.5 + 0.5 * np.cos(w))) * _DEG * env
    m.angles[:, _SH_L, 1] += opening
    m.angles[:, _SH_R, 1] -= opening
    return m


def _walk_in_place(d: _Draw) -> _Motion:
    """Periodic: knees lifted in turn, arms swinging opposite to the legs."""
    t, sec, phase = _periodic_frames(d)
    m = _Motion.zeros(t)
    a = m.angles
    env = _envelope(t, max(12.0, d.u(0.1, 0.3) * t))
    w = 2.0 * math.pi * d.u(0.8, 1.1) * sec + phase
    for hip, knee, lift in ((_HIP_L, _KNEE_L, _pulse(w, 1.5)), (_HIP_R, _KNEE_R, _pulse(w + math.pi, 1.5))):
        a[:, hip, 0] += 40.0 * env * lift * d.amp * _DEG
        a[:, knee, 0] -= 70.0 * env * lift * d.amp * _DEG
    swing = env * 25.0 * np.sin(w) * _DEG
    a[:, _SH_L, 0] -= swing
    a[:, _SH_R, 0] += swing
    return m


def _handshake(d: _Draw) -> tuple[_Motion, _Motion]:
    """Both people reach out with the right hand, shake (a short oscillation of the forearms), let go."""
    frames = [d.dur(0.35), d.dur(0.6), d.dur(1.0), d.dur(0.6), d.dur(0.35)]
    shake_hz, shake_deg = d.u(2.0, 3.0), d.u(6, 12)
    out = []
    for _ in range(2):
        reach = d.pose(_arms(_rest(), d.u(45, 60), d.u(20, 35), -d.u(5, 15), side="right"))
        angles, knots = _keyframes(_rest(), [(_rest(), frames[0]), (reach, frames[1]), (reach, frames[2]),
                                             (_rest(), frames[3]), (_rest(), frames[4])])
        f = np.arange(angles.shape[0], dtype=np.float64)
        during = _smoothstep((f - knots[2]) / 3.0) * _smoothstep((knots[3] - f) / 3.0)
        angles[:, _EL_R, 0] += during * shake_deg * _DEG * np.sin(2 * math.pi * shake_hz * f / FPS)
        out.append(_Motion.of(angles))
    return out[0], out[1]


def _push(d: _Draw) -> tuple[_Motion, _Motion]:
    """The actor draws both hands back and pushes the partner, who leans back and is shoved a step back."""
    chamber = d.pose(_arms(_rest(), d.u(40, 55), d.u(90, 110), -5))
    out = d.pose(_arms(_trunk(_rest(), -10), d.u(75, 90), d.u(5, 15), -5))
    angles, knots = _keyframes(_rest(), [(_rest(), d.dur(0.4)), (chamber, d.dur(0.5)), (chamber, d.dur(0.15)),
                                         (out, d.dur(0.25)), (out, d.dur(0.3)), (_rest(), d.dur(0.6)),
                                         (_rest(), d.dur(0.5))])
    t = angles.shape[0]
    contact = knots[4] - 1.0  # the hands reach the partner near the end of the thrust
    hit = d.pose(_arms(_trunk(_rest(), d.u(12, 20), 8), d.u(10, 30), 20, d.u(20, 35)))
    left = (t - 1) - contact  # frames after the contact: recoil, hold, recover, stand
    recoil, hold, recover = min(d.dur(0.2), 0.2 * left), min(d.dur(0.25), 0.2 * left), min(d.dur(0.8), 0.4 * left)
    partner, _ = _keyframes(_rest(), [(_rest(), contact), (hit, recoil), (hit, hold), (_rest(), recover),
                                      (_rest(), left - recoil - hold - recover)])
    f = np.arange(t, dtype=np.float64)
    shove = d.u(0.25, 0.45) * _smoothstep((f - contact) / max(2.0, recoil + hold))
    return _Motion.of(angles), _Motion(partner[:t], shove)


# Action table. Reversed classes are their base class played backwards (the same curves, time reversed).
_PHASED = {
    "sit down": _sit_down,
    "put on a hat": _put_on_hat,
    "put on glasses": _put_on_glasses,
    "pick up": _pick_up,
    "drink water": _drink_water,
    "stretch-bow-kick": lambda d: _exercise(d, ("stretch", "bow", "kick")),
    "bow-stretch-kick": lambda d: _exercise(d, ("bow", "stretch", "kick")),
}
_PERIODIC = {"wave": _wave, "clap": _clap, "walk in place": _walk_in_place}
_INTERACTIONS = {"handshake": _handshake, "push": _push}


def _action_motions(action: int, rng: np.random.Generator, pace: _Pace | None = None
                    ) -> tuple[_Motion, _Motion | None]:
    """Joint-angle curves of ``ACTIONS[action]``: ``(actor, partner)``; the partner is None except for the
    two-person interactions. The action sets its own length: a chain of phases lasts as long as its
    phases at the sample's tempo (about 2-4 s); a periodic action 40-120 frames (with a ``pace``, i.e. in
    the long set, :data:`_LONG_PERIODIC_FRAMES`)."""
    name = ACTIONS[action]
    d = _Draw(rng, pace)
    if name in REVERSED_PAIRS.values():
        base = next(k for k, v in REVERSED_PAIRS.items() if v == name)
        return _PHASED[base](d).reversed_in_time(), None
    if name in _PHASED:
        return _PHASED[name](d), None
    if name in _PERIODIC:
        return _PERIODIC[name](d), None
    if name in _INTERACTIONS:
        return _INTERACTIONS[name](d)
    raise AssertionError(f"no motion for action {name!r}")  # pragma: no cover - ACTIONS and the tables agree


def action_angles(action: int | str, rng: np.random.Generator) -> np.ndarray:
    """The actor's joint-angle curves ``[T, V, 3]`` (radians, body frame, before the idle sway) of one
    action; the action draws its own length T.

    A reversed class draws exactly what its base class draws and plays it backwards: for equal ``rng``
    states, ``action_angles(reversed) == action_angles(base)[::-1]``.
    """
    return _action_motions(_action_id(action), rng)[0].angles


def _idle_angles(t: int, rng: np.random.Generator) -> np.ndarray:
    """Resting posture plus a slow sway ``[T, V, 3]``: nobody stands perfectly still."""
    a = np.zeros((t, NUM_JOINTS, 3))
    a[:, _SH_L, 2] -= rng.uniform(4, 12) * _DEG
    a[:, _SH_R, 2] += rng.uniform(4, 12) * _DEG
    a[:, _EL_L, 0] += rng.uniform(3, 35) * _DEG
    a[:, _EL_R, 0] += rng.uniform(3, 35) * _DEG
    a[:, _SPINE_MID, 0] += rng.uniform(-8, 8) * _DEG  # per-sample trunk lean: static nuisance
    sec = np.arange(t, dtype=np.float64) / FPS
    for j, deg in ((_SPINE_MID, 2.0), (_SPINE_SH, 1.5), (_NECK, 3.0), (_SH_L, 3.0), (_SH_R, 3.0),
                   (_EL_L, 3.0), (_EL_R, 3.0), (_HIP_L, 1.0), (_HIP_R, 1.0)):
        for k in range(2):  # two incommensurate sines per axis
            freq = rng.uniform(0.1, 0.6, size=3)
            ph = rng.uniform(0.0, 2.0 * math.pi, size=3)
            a[:, j, :] += deg * _DEG * rng.uniform(0.3, 1.0) * np.sin(2 * math.pi * freq * sec[:, None] + ph) / (k + 1)
    return a


# --------------------------------------------------------------------------------------------------


# Camera, body assembly and noise
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CameraPose:
    """Where a body stands relative to the sensor.

    Attributes:
        camera: camera group 1..3 (view 0, +35, -35 degrees), stored in the index like NTU's C number.
        view_yaw: rotation of the body about the vertical axis as seen by the camera (radians).
        position: ``(x, z)`` of the body's root in camera space (metres, z = depth).
        height: camera height above the floor (metres).
        pitch: camera tilt about its x axis (radians).
    """

    camera: int
    view_yaw: float
    position: tuple[float, float]
    height: float
    pitch: float


def sample_camera(rng: np.random.Generator) -> CameraPose:
    camera = int(rng.integers(1, 4))
    base = {1: 0.0, 2: 35.0, 3: -35.0}[camera]
    return CameraPose(
        camera=camera,
        view_yaw=(base + rng.uniform(-10.0, 10.0)) * _DEG,
        position=(rng.uniform(-0.5, 0.5), rng.uniform(2.3, 3.8)),
        height=rng.uniform(0.8, 1.2),
        pitch=rng.uniform(-6.0, 6.0) * _DEG,
    )


def _rot_y(angle: np.ndarray) -> np.ndarray:
    z = np.zeros_like(angle)
    return _euler_to_matrix(np.stack([z, angle, z], axis=-1))




def _facing(yaw: float) -> np.ndarray:
    """Horizontal direction ``(x, z)`` a body turned by ``yaw`` about the vertical axis faces (rest: -z)."""
    return np.array([-math.sin(yaw), -math.cos(yaw)])


def _place(subject: Subject, motion: _Motion, cam: CameraPose, yaw0: float = 0.0,
           offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Forward kinematics + ground contact + camera transform -> ``[T, V, 3]`` float64 camera space.

    ``yaw0``: the body's turn about the vertical axis on top of the view angle; ``offset``: ``(x, z)``
    camera-space shift of the body from the camera's chosen spot (metres).
    """
    t = motion.angles.shape[0]
    rot = _euler_to_matrix(motion.angles)
    body = forward_kinematics(rest_offsets(subject.bone_lengths), rot)
    # Ground contact: the lower ankle stays at ankle height (crouches sink, kicks stand on one leg).
    root_y = _ANKLE_HEIGHT - np.minimum(body[:, _ANK_L, 1], body[:, _ANK_R, 1])
    body[..., 2] += motion.step[:, None]  # shoved backwards along the body's own +z
    world = body @ _rot_y(np.array(yaw0 + cam.view_yaw)).T
    world[..., 0] += cam.position[0] + offset[0]
    world[..., 1] += (root_y - cam.height)[:, None]
    world[..., 2] += cam.position[1] + offset[1]
    pitch = _euler_to_matrix(np.array([cam.pitch, 0.0, 0.0]))
    out = world @ pitch.T
    assert out.shape == (t, NUM_JOINTS, 3)
    return out


def _add_sensor_noise(x: np.ndarray, rng: np.random.Generator, present: np.ndarray | None = None) -> np.ndarray:
    """Jitter on every joint (more on hand tips/thumbs) and occasional inferred-joint glitches."""
    t = x.shape[0]
    sigma = rng.uniform(0.003, 0.008)
    scale = np.ones(NUM_JOINTS)
    scale[list(_HAND_EXTRAS)] = 2.0
    x = x + rng.normal(0.0, sigma, size=x.shape) * scale[None, :, None]
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 4))):
            j = int(rng.choice(_DISTAL))
            run = int(rng.integers(2, 9))
            s = int(rng.integers(0, max(1, t - run)))
            p = KINEMATIC_PARENTS[j]
            x[s : s + run, j] = x[s : s + run, p] + rng.normal(0.0, 0.03, size=(min(run, t - s), 3))
    if present is not None:
        x[~present] = 0.0
    return x




def synthesize_body(action: int | str, subject: Subject, rng: np.random.Generator, *,
                    camera: CameraPose | None = None, noise: bool = True) -> np.ndarray:
    """One person performing one action: ``[T, V, 3]`` float32 camera-space metres (for an interaction, the
    actor alone, facing the camera). The action sets T (about 2-4 s, see :func:`action_angles`).

    Args:
        action: class id (index into :data:`ACTIONS`) or its name.
        subject: the performer (bone lengths).
        rng: source of every per-sample random choice (postures, phase durations, posture at rest, noise).
        camera: the view; drawn from ``rng`` when None.
        noise: add sensor jitter and glitches. Without noise, ``|x[v] - x[KINEMATIC_PARENTS[v]]|`` equals
            ``subject.bone_lengths[v]`` in every frame (up to float32 rounding).
    """
    cls = _action_id(action)
    cam = camera if camera is not None else sample_camera(rng)
    motion = _action_motions(cls, rng)[0]
    motion.angles += _idle_angles(motion.angles.shape[0], rng)
    x = _place(subject, motion, cam)
    if noise:
        x = _add_sensor_noise(x, rng)
    return x.astype(np.float32)


def _action_id(action: int | str) -> int:
    if isinstance(action, str):
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        return ACTIONS.index(action)
    a = int(action)
    if not 0 <= a < len(ACTIONS):
        raise ValueError(f"action id {a} out of range [0, {len(ACTIONS)})")
    return a




def _other_subject(first: Subject, rng: np.random.Generator, seed: int, num_subjects: int) -> Subject:
    """Another performer than ``first`` (the second person of a sample)."""
    n = max(num_subjects, 2)
    return make_subject((first.subject_id + 1 + int(rng.integers(0, max(1, num_subjects - 1)))) % n, seed)


def _second_body(first: Subject, action: int, t: int, rng: np.random.Generator, cam: CameraPose,
                 seed: int, num_subjects: int) -> np.ndarray:
    """A second person next to a one-person action: someone doing the same action beside the actor, or a
    bystander idling behind, sometimes only in part of the sequence (zeros elsewhere, like NTU's spurious
    bodies)."""
    other = _other_subject(first, rng, seed, num_subjects)
    side = rng.choice([-1.0, 1.0])
    present = np.ones(t, dtype=bool)
    if rng.random() < 0.5:  # doing the same action
        motion = _action_motions(action, rng)[0].resampled(t)
        offset = (side * rng.uniform(0.9, 1.4), rng.uniform(-0.3, 0.3))
        yaw0 = side * rng.uniform(50, 90) * _DEG  # turned towards the actor
    else:  # bystander
        motion = _Motion.zeros(t)
        offset = (side * rng.uniform(1.0, 1.6), rng.uniform(0.5, 1.5))
        yaw0 = rng.uniform(-60, 60) * _DEG
        if rng.random() < 0.5 and t >= 20:
            s = int(rng.integers(0, t // 2))
            e = int(rng.integers(s + 10, t + 1))
            present[:] = False
            present[s:e] = True
    motion.angles += _idle_angles(t, rng)
    x = _place(other, motion, cam, yaw0=yaw0, offset=offset)
    return _add_sensor_noise(x, rng, present)


def _pair_layout(rng: np.random.Generator, cam: CameraPose) -> tuple[float, tuple[float, float], float,
                                                                     tuple[float, float]]:
    """Where the two people of an interaction stand: turned 60-100 degrees from the camera, facing each
    other 0.8-1.1 m apart. Returns ``(actor yaw0, actor offset, partner yaw0, partner offset)``."""
    yaw = float(rng.choice([-1.0, 1.0]) * rng.uniform(60, 100) * _DEG)
    half = _facing(yaw + cam.view_yaw) * rng.uniform(0.8, 1.1) / 2
    return yaw, (-half[0], -half[1]), yaw + math.pi, (half[0], half[1])


def _interaction_bodies(subject: Subject, actor: _Motion, partner: _Motion, rng: np.random.Generator,
                        cam: CameraPose, plan: _Plan, present: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Actor and partner of an interaction ``([T, V, 3], [T, V, 3])``; ``present [T]`` says when the
    partner is there (zeros elsewhere)."""
    t = actor.angles.shape[0]
    other = _other_subject(subject, rng, plan.seed, plan.num_subjects)
    yaw_a, off_a, yaw_p, off_p = _pair_layout(rng, cam)
    actor.angles += _idle_angles(t, rng)
    partner.angles += _idle_angles(t, rng)
    x_actor = _add_sensor_noise(_place(subject, actor, cam, yaw_a, off_a), rng)
    x_partner = _add_sensor_noise(_place(other, partner, cam, yaw_p, off_p), rng, present)
    return x_actor, x_partner


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------

def is_test_subject(subject_id: int) -> bool:
    """Cross-subject split rule: subjects with ``id % 3 == 2`` are test subjects (~1/3 of them)."""
    return subject_id % 3 == 2


def _kind_code(kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return KINDS.index(kind)


@dataclass(frozen=True)
class _Plan:
    """What :func:`iter_synthetic` will generate, known before generating it (for the splits)."""

    kind: str
    seed: int
    num_classes: int
    num_subjects: int
    two_person_prob: float
    items: tuple[tuple[int, int, int], ...]  # (class or -1, per-class / per-sequence index, subject id)


def _plan(kind: str, seed: int, samples_per_class: int | None, num_sequences: int | None, num_subjects: int,
          num_classes: int, two_person_prob: float) -> _Plan:
    _kind_code(kind)
    if not 2 <= num_classes <= len(ACTIONS):
        raise ValueError(f"num_classes must be in [2, {len(ACTIONS)}], got {num_classes}")
    if num_subjects < 3:
        raise ValueError(f"num_subjects must be >= 3 (test subjects are those with id % 3 == 2), got {num_subjects}")
    if not 0.0 <= two_person_prob <= 1.0:
        raise ValueError(f"two_person_prob must be in [0, 1], got {two_person_prob}")
    if kind == "trimmed":
        if num_sequences is not None:
            raise ValueError("num_sequences applies to kind='untrimmed'/'long'; use samples_per_class for 'trimmed'")
        spc = 60 if samples_per_class is None else int(samples_per_class)
        if spc < 1:
            raise ValueError(f"samples_per_class must be >= 1, got {spc}")
        # Subjects round-robin within a class so every class is in both splits.
        items = tuple((c, k, k % num_subjects) for c in range(num_classes) for k in range(spc))
    else:
        if samples_per_class is not None:
            raise ValueError(f"samples_per_class applies to kind='trimmed'; use num_sequences for kind={kind!r}")
        n = (48 if kind == "untrimmed" else 36) if num_sequences is None else int(num_sequences)
        if n < 1:
            raise ValueError(f"num_sequences must be >= 1, got {n}")
        items = tuple((-1, k, k % num_subjects) for k in range(n))
    return _Plan(kind, int(seed), num_classes, num_subjects, float(two_person_prob), items)



def _trimmed_sample(plan: _Plan, cls: int, k: int, subject_id: int) -> StoreSample:
    rng = np.random.default_rng([plan.seed, 2, cls, k])
    subject = make_subject(subject_id, plan.seed)
    cam = sample_camera(rng)
    actor, partner = _action_motions(cls, rng)
    t = actor.angles.shape[0]
    data = np.zeros((t, 2, NUM_JOINTS, 3), dtype=np.float32)
    if partner is not None:
        data[:, 0], data[:, 1] = _interaction_bodies(subject, actor, partner, rng, cam, plan)
    else:
        actor.angles += _idle_angles(t, rng)
        data[:, 0] = _add_sensor_noise(_place(subject, actor, cam), rng)
        if rng.random() < plan.two_person_prob:
            data[:, 1] = _second_body(subject, cls, t, rng, cam, plan.seed, plan.num_subjects)
    replication = k // plan.num_subjects % 2 + 1
    return StoreSample(
        name=f"synA{cls + 1:03d}P{subject_id + 1:03d}C{cam.camera:03d}N{k:05d}",
        data=data, label=cls, setup=1, camera=cam.camera, performer=subject_id + 1, replication=replication,
    )


_LONG_MIN = 381  # frames of action at least in a "long" sequence
_MAX_TURN_PER_FRAME = 5.0 * _DEG  # how fast an idle gap carries a joint from one action's posture to the next
# The long set (motion prediction) follows one performer's pace (_Pace); half of its actions are periodic
# (drawn among PERIODIC_ACTIONS, the other half among all classes) and last 4-8 s, as long recordings of real
# motion are dominated by repetitive movement; a gap is a pause of 0.4 s at the tempo, longer where the move
# to the next action's first posture needs it at 3 degrees per frame (at tempo 1).
_LONG_PERIODIC_SHARE = 0.5
_LONG_PERIODIC_FRAMES = (120, 241)
_LONG_PAUSE_SECONDS = 0.4
_LONG_TURN_PER_FRAME = 3.0 * _DEG


def _sequence_sample(plan: _Plan, k: int, subject_id: int) -> StoreSample:
    """An untrimmed (3-6 actions, idle gaps of 20-70 frames) or long (6-9 actions, more until >= 381 frames;
    one :class:`_Pace` for all of them, half of them periodic; pauses of 0.4 s at the tempo) multi-action
    sequence of one camera view.

    An idle gap also carries the body from one action's last posture to the next one's first (a gap is
    lengthened where that needs more frames). An interaction brings its partner in for the action and a few
    frames around it (zeros elsewhere); the actor then stands turned towards the partner all along.
    """
    untrimmed = plan.kind == "untrimmed"
    rng = np.random.default_rng([plan.seed, 3 + _kind_code(plan.kind), k])
    subject = make_subject(subject_id, plan.seed)
    cam = sample_camera(rng)
    n_actions = int(rng.integers(3, 7)) if untrimmed else int(rng.integers(6, 10))
    pace = None if untrimmed else _Pace(tempo=float(rng.uniform(0.85, 1.25)), amp=float(rng.uniform(0.85, 1.15)))
    periodic = [c for c in range(plan.num_classes) if ACTIONS[c] in PERIODIC_ACTIONS]
    actions: list[tuple[int, _Motion, _Motion | None]] = []
    while len(actions) < n_actions or (not untrimmed and sum(a[1].angles.shape[0] for a in actions) < _LONG_MIN):
        if pace is not None and periodic and rng.random() < _LONG_PERIODIC_SHARE:
            cls = int(rng.choice(periodic))
        else:
            cls = int(rng.integers(0, plan.num_classes))
        actions.append((cls, *_action_motions(cls, rng, pace)))
    # Frames: gap, action, gap, ..., action, gap.
    pieces: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    partner_spans: list[tuple[int, _Motion]] = []
    prev, start = _rest(), 0
    for item in actions + [None]:
        nxt = item[1].angles[0] if item is not None else _rest()
        turn = float(np.abs(nxt - prev).max())
        if pace is None:
            g = max(int(rng.integers(20, 71)), int(math.ceil(turn / _MAX_TURN_PER_FRAME)))
        else:
            g = int(math.ceil(pace.tempo * max(_LONG_PAUSE_SECONDS * FPS, turn / _LONG_TURN_PER_FRAME)))
        s = _smoothstep(np.arange(1, g + 1) / (g + 1))[:, None, None]
        pieces.append(prev + s * (nxt - prev))
        labels.append(np.zeros(g, dtype=np.int16))
        start += g
        if item is None:
            break
        cls, actor, partner = item
        pieces.append(actor.angles)
        labels.append(np.full(actor.angles.shape[0], cls + 1, dtype=np.int16))
        if partner is not None:
            partner_spans.append((start, partner))
        start += actor.angles.shape[0]
        prev = actor.angles[-1]
    motion = _Motion(np.concatenate(pieces), np.zeros(start))
    frame_labels = np.concatenate(labels)
    t = start
    data = np.zeros((t, 2, NUM_JOINTS, 3), dtype=np.float32)
    if partner_spans:
        partner = _Motion.zeros(t)
        present = np.zeros(t, dtype=bool)
        carry = 0.0  # a shove leaves the partner where it pushed them
        for s0, part in partner_spans:
            n = part.angles.shape[0]
            partner.angles[s0:s0 + n] = part.angles
            partner.step[s0:s0 + n] = carry + part.step
            carry += float(part.step[-1])
            partner.step[s0 + n:] = carry
            margin = int(rng.integers(5, 16))
            present[max(0, s0 - margin):s0 + n + margin] = True
        data[:, 0], data[:, 1] = _interaction_bodies(subject, motion, partner, rng, cam, plan, present)
    else:
        motion.angles += _idle_angles(t, rng)
        data[:, 0] = _add_sensor_noise(_place(subject, motion, cam), rng)
        if rng.random() < plan.two_person_prob:
            one_person = [c for c in range(plan.num_classes) if ACTIONS[c] not in INTERACTIONS]
            data[:, 1] = _second_body(subject, int(rng.choice(one_person)), t, rng, cam, plan.seed,
                                      plan.num_subjects)
    prefix = "synU" if untrimmed else "synL"
    return StoreSample(
        name=f"{prefix}{k:05d}P{subject_id + 1:03d}C{cam.camera:03d}",
        data=data, label=-1, setup=1, camera=cam.camera, performer=subject_id + 1, replication=1,
        frame_labels=frame_labels,
    )


def iter_synthetic(kind: str = "trimmed", *, seed: int = 0, samples_per_class: int | None = None,
                   num_sequences: int | None = None, num_subjects: int = 10, num_classes: int = len(ACTIONS),
                   two_person_prob: float = 0.2) -> Iterator[StoreSample]:
    """Generate the samples of :func:`write_synthetic` one at a time (``data`` is ``[T, 2, 25, 3]`` float32)."""
    plan = _plan(kind, seed, samples_per_class, num_sequences, num_subjects, num_classes, two_person_prob)
    for cls, k, subject_id in plan.items:
        yield _trimmed_sample(plan, cls, k, subject_id) if kind == "trimmed" else _sequence_sample(plan, k, subject_id)


def synthetic_splits(kind: str = "trimmed", *, samples_per_class: int | None = None,
                     num_sequences: int | None = None, num_subjects: int = 10,
                     num_classes: int = len(ACTIONS)) -> dict[str, np.ndarray]:
    """``train`` / ``test`` indices (into :func:`iter_synthetic` order) by subject (:func:`is_test_subject`)."""
    plan = _plan(kind, 0, samples_per_class, num_sequences, num_subjects, num_classes, 0.0)
    test = np.array([is_test_subject(s) for _, _, s in plan.items], dtype=bool)
    return {"train": np.flatnonzero(~test).astype(np.int64), "test": np.flatnonzero(test).astype(np.int64)}


def write_synthetic(output: str | os.PathLike, kind: str = "trimmed", *, seed: int = 0,
                    samples_per_class: int | None = None, num_sequences: int | None = None,
                    num_subjects: int = 10, num_classes: int = len(ACTIONS), two_person_prob: float = 0.2,
                    overwrite: bool = False) -> Path:
    """Generate a synthetic store at ``output`` and return its path.

    Args:
        output: store directory (created atomically by :func:`~hitrs_fast.data.store.write_store`).
        kind: ``"trimmed"`` (classification), ``"untrimmed"`` (detection, per-frame labels) or ``"long"``
            (motion prediction, several hundred frames per sequence).
        seed: every sample is a pure function of ``(seed, kind, class, index)``.
        samples_per_class: trimmed only; default 60 (16 classes x 60 = 960 samples, a few seconds).
        num_sequences: untrimmed / long only; default 48 / 36.
        num_subjects: performers, assigned round-robin; subjects with ``id % 3 == 2`` form the test split.
        num_classes: use the first ``num_classes`` of :data:`ACTIONS`.
        two_person_prob: probability of a second body (interaction partner or bystander) in slot 1.
        overwrite: replace an existing store.
    """
    plan = _plan(kind, seed, samples_per_class, num_sequences, num_subjects, num_classes, two_person_prob)
    splits = synthetic_splits(kind, samples_per_class=samples_per_class, num_sequences=num_sequences,
                              num_subjects=num_subjects, num_classes=num_classes)
    info = {
        "source": "synthetic",
        "synthetic_kind": kind,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_subjects": int(num_subjects),
        "two_person_prob": float(two_person_prob),
        "num_classes": int(num_classes),
        "class_names": list(ACTIONS[:num_classes]),
        "frame_label_convention": "0 = background, class k -> k + 1" if kind != "trimmed" else None,
        "body_selection": "synthetic: actor in slot 0, optional partner/bystander in slot 1",
        "centring": "none",
        "joint_layout": "ntu25",
        "fps": FPS,
        "split_rule": "train/test by subject: test subjects have id % 3 == 2 (performer = id + 1)",
    }
    info = {k: v for k, v in info.items() if v is not None}
    samples = iter_synthetic(kind, seed=seed, samples_per_class=samples_per_class, num_sequences=num_sequences,
                             num_subjects=num_subjects, num_classes=num_classes, two_person_prob=two_person_prob)
    assert len(plan.items) == sum(v.size for v in splits.values())
    return write_store(output, samples, info=info, splits=splits, overwrite=overwrite)


def synthetic_cache_path(cache_dir: str | os.PathLike, kind: str, seed: int, size: int) -> Path:
    """Where :func:`cached_synthetic` keeps the default-parameter set of ``(kind, seed, size)``:
    ``cache_dir/synthetic-<kind>-seed<seed>-n<size>``. ``size`` is ``samples_per_class`` for
    ``"trimmed"`` and ``num_sequences`` otherwise."""
    if kind not in KINDS:
        raise ValueError(f"synthetic kind {kind!r}: expected one of {KINDS}")
    return Path(cache_dir) / f"synthetic-{kind}-seed{int(seed)}-n{int(size)}"


def cached_synthetic(cache_dir: str | os.PathLike, kind: str, seed: int, size: int) -> Path:
    """The synthetic store of ``kind`` with ``size`` samples per class (trimmed) or sequences (untrimmed,
    long) and default other parameters, generated on first use under ``cache_dir``.

    Pre-training and the downstream tasks share this cache, so a set is generated once whoever asks for
    it first. A directory without ``meta.json`` (an interrupted generation) or written by another
    :data:`GENERATOR_VERSION` is regenerated.

    Returns:
        The store directory (:func:`synthetic_cache_path`).
    """
    path = synthetic_cache_path(cache_dir, kind, seed, size)
    meta = path / "meta.json"

    def current() -> bool:
        return meta.exists() and json.loads(meta.read_text()).get("generator_version") == GENERATOR_VERSION

    if not current():
        print(f"generating the synthetic {kind} set in {path} ...", flush=True)
        sizes = {"samples_per_class": size} if kind == "trimmed" else {"num_sequences": size}
        try:
            write_synthetic(path, kind, seed=seed, overwrite=path.exists(), **sizes)
        except FileExistsError:
            # Another command sharing the cache wrote the same set (a pure function of kind, seed and size)
            # while this one was generating it: use theirs.
            if not current():
                raise
    return path
