"""Procedural synthetic motion on the NTU 25-joint skeleton: the built-in dataset of the main job.

Everything here is deterministic for a seed (numpy ``Generator`` seeded from ``SeedSequence`` keys, so a
sample does not depend on which other samples were generated) and written through
:func:`hitrs_fast.data.store.write_store`, so every pipeline reads it exactly like converted real data.

Model of one body sequence ``[T, V=25, C=3]`` (Kinect v2 order, metres, Kinect camera space: y up, z the
depth away from the sensor, ~2.3-3.8 m):

1. **Subject**: bone lengths = base adult lengths x a per-subject height factor x per-bone factors, the
   same on the left and right side (:func:`make_subject`).
2. **Pose**: local joint rotations ``[T, V, 3]`` (Euler x, y, z; ``R = Rz Ry Rx``) in a body frame with +x
   the body's right, +y up and +z backwards (the body faces -z, i.e. the camera). Each action is a few
   parametric joint-angle curves (amplitude, speed, phase, envelope drawn per sample) plus an idle sway
   on the spine, shoulders, elbows and hips and a per-sample resting posture.
3. **Forward kinematics** over :data:`~hitrs_fast.data.skeleton.KINEMATIC_PARENTS` (the NTU bone tree
   re-rooted at SpineBase), so bone lengths are exactly constant over time; the root is lowered/raised so
   the lower ankle stays on the floor (squats, kicks), plus an airborne offset for jumps.
4. **Camera**: the body is rotated about the vertical axis by the view angle (three camera groups at
   0 and +-35 degrees, +-10 degrees jitter), placed at x ~ U(-0.5, 0.5), depth z ~ U(2.3, 3.8), below a
   camera ~U(0.8, 1.2) m above the floor with a small pitch.
5. **Sensor noise** (``noise=True``): Gaussian jitter (sigma 3-8 mm, doubled on hand tips and thumbs) and
   occasional short "inferred joint" glitches where a distal joint collapses towards its parent for 2-8
   frames, as Kinect does when it loses a hand or foot.

The 12 actions (:data:`ACTIONS`) are built to share body parts and to differ in side or timing (wave left
vs right, raise-and-hold vs wave, clap vs punch vs raise both arms, squat vs jump, kick vs walk in place
vs turn around), so static pose statistics alone do not separate them.

Store kinds (:func:`write_synthetic`):

- ``"trimmed"``: one action per sample, 40-120 frames, label = class id, ``train``/``test`` split by subject;
- ``"untrimmed"``: 3-6 actions separated by idle motion, per-frame labels (0 = background, class k -> k+1),
  label -1, for temporal detection;
- ``"long"``: several hundred frames of back-to-back actions with short idle gaps (per-frame labels kept),
  label -1, for motion prediction.
"""

from __future__ import annotations

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
    "KINDS",
    "CameraPose",
    "Subject",
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

GENERATOR_VERSION = 1
FPS = 30
KINDS = ("trimmed", "untrimmed", "long")

ACTIONS: tuple[str, ...] = (
    "wave left hand",
    "wave right hand",
    "raise left hand",
    "clap",
    "punch",
    "raise both arms",
    "squat",
    "jump",
    "kick right leg",
    "bow",
    "walk in place",
    "turn around",
)

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

    angles: np.ndarray     # [T, V, 3] local Euler angles, radians
    yaw: np.ndarray        # [T] extra rotation of the whole body about the vertical axis, radians
    airborne: np.ndarray   # [T] height added above the ground-contact level, metres

    @classmethod
    def zeros(cls, t: int) -> _Motion:
        return cls(np.zeros((t, NUM_JOINTS, 3)), np.zeros(t), np.zeros(t))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _envelope(t: int, ramp: float) -> np.ndarray:
    """0 -> 1 over ``ramp`` frames at the start and 1 -> 0 at the end: actions begin and end at rest."""
    f = np.arange(t, dtype=np.float64)
    ramp = max(1.0, min(ramp, t / 3.0))
    return _smoothstep(f / ramp) * _smoothstep((t - 1 - f) / ramp)


def _pulse(phase: np.ndarray, sharpness: float) -> np.ndarray:
    """Positive half-waves of a sine raised to ``sharpness``: short strokes (punches, kicks)."""
    return np.maximum(np.sin(phase), 0.0) ** sharpness


def _set_both_arms_x(a: np.ndarray, shoulder: np.ndarray, elbow: np.ndarray | float = 0.0) -> None:
    a[:, _SH_L, 0] += shoulder
    a[:, _SH_R, 0] += shoulder
    a[:, _EL_L, 0] += elbow
    a[:, _EL_R, 0] += elbow


def _flat_feet(a: np.ndarray) -> None:
    """Ankle pitch cancelling hip + knee pitch so the feet stay flat on the floor."""
    a[:, _ANK_L, 0] = -(a[:, _HIP_L, 0] + a[:, _KNEE_L, 0])
    a[:, _ANK_R, 0] = -(a[:, _HIP_R, 0] + a[:, _KNEE_R, 0])


def _action_motion(action: int, t: int, rng: np.random.Generator) -> _Motion:
    """Joint-angle curves of ``ACTIONS[action]`` over ``t`` frames with per-sample amplitude/speed/phase.

    Sign conventions (body frame: +x right, +y up, +z back): shoulder/hip flexion (limb forward) is +x,
    knee flexion -x, trunk forward bend -x; raising the left arm sideways is -z at ShoulderLeft and the
    right arm +z at ShoulderRight (mirroring negates the y and z angles).
    """
    m = _Motion.zeros(t)
    a = m.angles
    amp = rng.uniform(0.8, 1.15)
    speed = rng.uniform(0.75, 1.3)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    sec = np.arange(t, dtype=np.float64) / FPS * speed
    # One envelope law for every action, so the share of rest frames says nothing about the class.
    env = _envelope(t, rng.uniform(0.1, 0.3) * t)
    name = ACTIONS[action]

    def osc(freq_lo: float, freq_hi: float) -> np.ndarray:
        return 2.0 * math.pi * rng.uniform(freq_lo, freq_hi) * sec + phase

    if name in ("wave left hand", "wave right hand"):
        side = -1.0 if name.startswith("wave left") else 1.0
        sh, el = (_SH_L, _EL_L) if side < 0 else (_SH_R, _EL_R)
        w = osc(1.6, 2.4)
        a[:, sh, 2] += side * env * rng.uniform(100, 160) * _DEG * amp
        a[:, sh, 0] += env * rng.uniform(0, 20) * _DEG
        # Forearm swings in the frontal plane about a bent elbow: that oscillation is the "wave".
        a[:, el, 2] += -side * env * (rng.uniform(10, 45) + amp * 28 * np.sin(w)) * _DEG
    elif name == "raise left hand":
        # Raise, hold, lower: the very pose distribution of "wave left hand", without the oscillation.
        a[:, _SH_L, 2] += -env * rng.uniform(100, 160) * _DEG * amp
        a[:, _SH_L, 0] += env * rng.uniform(0, 20) * _DEG
        a[:, _EL_L, 2] += env * rng.uniform(10, 45) * _DEG
    elif name == "clap":
        w = osc(1.8, 2.6)
        _set_both_arms_x(a, env * rng.uniform(55, 85) * _DEG, env * rng.uniform(5, 35) * _DEG)
        opening = (8.0 + amp * 32.0 * (0.5 + 0.5 * np.cos(w))) * _DEG * env
        a[:, _SH_L, 1] += opening
        a[:, _SH_R, 1] -= opening
    elif name == "punch":
        w = osc(0.8, 1.2)
        p_l, p_r = _pulse(w, 4.0), _pulse(w + math.pi, 4.0)
        for sh, el, p in ((_SH_L, _EL_L, p_l), (_SH_R, _EL_R, p_r)):
            a[:, sh, 0] += env * (35.0 + 50.0 * amp * p) * _DEG
            a[:, el, 0] += env * (110.0 - 105.0 * p) * _DEG
        a[:, _SPINE_MID, 1] += env * 12.0 * (p_l - p_r) * _DEG
    elif name == "raise both arms":
        w = osc(0.4, 0.7)
        # Same mean arm elevation / opening / elbow bend as "clap"; only the timing differs.
        lift = env * (0.5 - 0.5 * np.cos(w - phase)) * rng.uniform(110, 170) * _DEG * amp
        _set_both_arms_x(a, lift, env * rng.uniform(5, 35) * _DEG)
        opening = env * rng.uniform(8, 40) * _DEG
        a[:, _SH_L, 1] += opening
        a[:, _SH_R, 1] -= opening
    elif name == "squat":
        p = env * (0.5 - 0.5 * np.cos(osc(0.35, 0.6) - phase)) * amp
        for hip, knee in ((_HIP_L, _KNEE_L), (_HIP_R, _KNEE_R)):
            a[:, hip, 0] += p * 95.0 * _DEG
            a[:, knee, 0] -= p * 115.0 * _DEG
        a[:, _SPINE_MID, 0] -= p * 25.0 * _DEG
        _set_both_arms_x(a, p * rng.uniform(40, 80) * _DEG)
        _flat_feet(a)
    elif name == "jump":
        period = 1.0 / rng.uniform(0.7, 1.0)
        s = np.mod(sec / period + phase / (2 * math.pi), 1.0)
        crouch = env * (np.exp(-(((s - 0.12) / 0.07) ** 2)) + np.exp(-(((s - 0.88) / 0.07) ** 2)))
        height = rng.uniform(0.12, 0.25) * amp
        air = np.where((s > 0.3) & (s < 0.7), (s - 0.3) * (0.7 - s) / 0.04, 0.0) * env
        m.airborne = height * air
        for hip, knee in ((_HIP_L, _KNEE_L), (_HIP_R, _KNEE_R)):
            a[:, hip, 0] += (55.0 * crouch + 15.0 * air) * _DEG
            a[:, knee, 0] -= (80.0 * crouch + 25.0 * air) * _DEG
        _flat_feet(a)
        _set_both_arms_x(a, (-20.0 * crouch + 70.0 * air) * _DEG)
    elif name == "kick right leg":
        w = osc(0.6, 0.9)
        kick = env * _pulse(w, 3.0)
        chamber = env * _pulse(w + 0.9, 2.0) * (1.0 - kick)
        a[:, _HIP_R, 0] += (kick * rng.uniform(60, 85) * amp + 20.0 * chamber) * _DEG
        a[:, _KNEE_R, 0] -= (70.0 * chamber + 5.0 * kick) * _DEG
        a[:, _SPINE_MID, 0] += 10.0 * kick * _DEG
        a[:, _SH_L, 0] += 25.0 * kick * _DEG
    elif name == "bow":
        p = env * (0.5 - 0.5 * np.cos(osc(0.3, 0.5) - phase)) * amp
        bend = p * rng.uniform(45, 65) * _DEG
        a[:, _SPINE_MID, 0] -= bend
        a[:, _NECK, 0] -= p * 15.0 * _DEG
        _set_both_arms_x(a, 0.7 * bend)  # arms keep hanging roughly vertically
    elif name in ("walk in place", "turn around"):
        w = osc(0.8, 1.1)
        gain = 1.0 if name == "walk in place" else rng.uniform(0.3, 0.5)
        lift_l, lift_r = env * _pulse(w, 1.5) * gain * amp, env * _pulse(w + math.pi, 1.5) * gain * amp
        for hip, knee, lift in ((_HIP_L, _KNEE_L, lift_l), (_HIP_R, _KNEE_R, lift_r)):
            a[:, hip, 0] += 40.0 * lift * _DEG
            a[:, knee, 0] -= 70.0 * lift * _DEG
        swing = env * gain * 25.0 * np.sin(w) * _DEG
        a[:, _SH_L, 0] -= swing  # arms swing opposite to the legs
        a[:, _SH_R, 0] += swing
        if name == "turn around":
            f = np.arange(t) / max(t - 1, 1)
            m.yaw = rng.choice([-1.0, 1.0]) * rng.uniform(120, 180) * _DEG * _smoothstep((f - 0.1) / 0.8)
    else:  # pragma: no cover - ACTIONS and this table are edited together
        raise AssertionError(f"no motion for action {name!r}")
    return m


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


def _place(subject: Subject, motion: _Motion, cam: CameraPose, yaw0: float = 0.0,
           offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Forward kinematics + ground contact + camera transform -> ``[T, V, 3]`` float64 camera space."""
    t = motion.angles.shape[0]
    rot = _euler_to_matrix(motion.angles)
    body = forward_kinematics(rest_offsets(subject.bone_lengths), rot)
    # Ground contact: the lower ankle stays at ankle height (squats sink, kicks stand on one leg).
    root_y = _ANKLE_HEIGHT - np.minimum(body[:, _ANK_L, 1], body[:, _ANK_R, 1]) + motion.airborne
    world = body @ _rot_y(motion.yaw + yaw0 + cam.view_yaw).transpose(0, 2, 1)
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


def synthesize_body(action: int | str, subject: Subject, num_frames: int, rng: np.random.Generator, *,
                    camera: CameraPose | None = None, noise: bool = True) -> np.ndarray:
    """One person performing one action: ``[T, V, 3]`` float32 camera-space metres.

    Args:
        action: class id (index into :data:`ACTIONS`) or its name.
        subject: the performer (bone lengths).
        num_frames: T >= 2.
        rng: source of every per-sample random choice (amplitude, speed, phase, posture, noise).
        camera: the view; drawn from ``rng`` when None.
        noise: add sensor jitter and glitches. Without noise, ``|x[v] - x[KINEMATIC_PARENTS[v]]|`` equals
            ``subject.bone_lengths[v]`` in every frame (up to float32 rounding).
    """
    cls = _action_id(action)
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    cam = camera if camera is not None else sample_camera(rng)
    motion = _action_motion(cls, num_frames, rng)
    motion.angles += _idle_angles(num_frames, rng)
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


def _second_body(first: Subject, action: int, t: int, rng: np.random.Generator, cam: CameraPose,
                 seed: int, num_subjects: int) -> np.ndarray:
    """A second person: an interaction partner doing the same action facing the actor, or a bystander
    idling behind, sometimes only in part of the sequence (zeros elsewhere, like NTU's spurious bodies)."""
    other = make_subject((first.subject_id + 1 + int(rng.integers(0, max(1, num_subjects - 1)))) % max(num_subjects, 2),
                         seed)
    side = rng.choice([-1.0, 1.0])
    present = np.ones(t, dtype=bool)
    if rng.random() < 0.5:  # interaction partner
        motion = _action_motion(action, t, rng)
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
    t = int(rng.integers(40, 121))
    cam = sample_camera(rng)
    data = np.zeros((t, 2, NUM_JOINTS, 3), dtype=np.float32)
    data[:, 0] = synthesize_body(cls, subject, t, rng, camera=cam)
    if rng.random() < plan.two_person_prob:
        data[:, 1] = _second_body(subject, cls, t, rng, cam, plan.seed, plan.num_subjects)
    replication = k // plan.num_subjects % 2 + 1
    return StoreSample(
        name=f"synA{cls + 1:03d}P{subject_id + 1:03d}C{cam.camera:03d}N{k:05d}",
        data=data, label=cls, setup=1, camera=cam.camera, performer=subject_id + 1, replication=replication,
    )


def _sequence_sample(plan: _Plan, k: int, subject_id: int) -> StoreSample:
    """An untrimmed (3-6 actions of 45-110 frames, idle gaps of 20-70) or long (6-9 actions of 60-110 frames,
    gaps of 3-15: >= 381 frames) multi-action sequence of one camera view."""
    untrimmed = plan.kind == "untrimmed"
    rng = np.random.default_rng([plan.seed, 3 + _kind_code(plan.kind), k])
    subject = make_subject(subject_id, plan.seed)
    cam = sample_camera(rng)
    n_actions = int(rng.integers(3, 7)) if untrimmed else int(rng.integers(6, 10))
    segments: list[tuple[int, int]] = []  # (class or -1 for idle, frames)
    gap = (20, 71) if untrimmed else (3, 16)
    action_frames = (45, 111) if untrimmed else (60, 111)
    segments.append((-1, int(rng.integers(*gap))))
    for _ in range(n_actions):
        segments.append((int(rng.integers(0, plan.num_classes)), int(rng.integers(*action_frames))))
        segments.append((-1, int(rng.integers(*gap))))
    t = sum(n for _, n in segments)
    motion = _Motion.zeros(t)
    frame_labels = np.zeros(t, dtype=np.int16)
    start, yaw_carry = 0, 0.0
    for cls, n in segments:
        sl = slice(start, start + n)
        if cls >= 0:
            seg = _action_motion(cls, n, rng)
            motion.angles[sl] = seg.angles
            motion.airborne[sl] = seg.airborne
            motion.yaw[sl] = yaw_carry + seg.yaw
            yaw_carry += float(seg.yaw[-1])  # a turn leaves the person facing the new way
            frame_labels[sl] = cls + 1
        else:
            motion.yaw[sl] = yaw_carry
        start += n
    motion.angles += _idle_angles(t, rng)
    data = np.zeros((t, 2, NUM_JOINTS, 3), dtype=np.float32)
    data[:, 0] = _add_sensor_noise(_place(subject, motion, cam), rng)
    if rng.random() < plan.two_person_prob:
        data[:, 1] = _second_body(subject, int(rng.integers(0, plan.num_classes)), t, rng, cam, plan.seed,
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
        samples_per_class: trimmed only; default 60 (12 classes x 60 = 720 samples, a few seconds).
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
    it first. A directory without ``meta.json`` (an interrupted generation) is regenerated.

    Returns:
        The store directory (:func:`synthetic_cache_path`).
    """
    path = synthetic_cache_path(cache_dir, kind, seed, size)
    if not (path / "meta.json").exists():
        print(f"generating the synthetic {kind} set in {path} ...", flush=True)
        sizes = {"samples_per_class": size} if kind == "trimmed" else {"num_sequences": size}
        write_synthetic(path, kind, seed=seed, overwrite=path.exists(), **sizes)
    return path
