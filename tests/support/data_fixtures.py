"""Writers for the synthetic data fixtures (the dataset formats of ``docs/data.md``), written into ``tmp_path``.

Each writer returns what the tests need to check the parsed result (expected arrays, names, labels).
Coordinates are written with 7 significant digits; expected arrays hold the float32 of the exact text.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BODY_ID_BASE = 72057594037927936  # about 7.2e16: a float64 would lose the low digits


def _fmt(v: float) -> str:
    return f"{v:.7g}"


def _joint_block(xyz: np.ndarray, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """25 joint lines with all 12 fields; returns the lines and the exact float32 xyz they encode."""
    lines = []
    exact = np.zeros((25, 3), dtype=np.float32)
    for j in range(25):
        x, y, z = (_fmt(float(v)) for v in xyz[j])
        exact[j] = [float(x), float(y), float(z)]
        depth = (_fmt(rng.uniform(0, 512)), _fmt(rng.uniform(0, 424)))
        color = (_fmt(rng.uniform(0, 1920)), _fmt(rng.uniform(0, 1080)))
        # Orientation quaternions are 0 0 0 0 on end joints in the real data.
        quat = ("0", "0", "0", "0") if j in (3, 15, 19, 21, 22, 23, 24) else tuple(_fmt(rng.normal()) for _ in range(4))
        state = str(int(rng.choice([0, 1, 2, 2, 2])))
        lines.append(" ".join((x, y, z, *depth, *color, *quat, state)))
    return lines, exact


@dataclass
class NtuFile:
    """A written fixture file and what its frames hold (file order, all bodies)."""

    path: Path
    name: str
    body_ids: list[list[int]] = field(default_factory=list)
    xyz: list[list[np.ndarray]] = field(default_factory=list)  # frames -> bodies -> [25, 3] float32


def write_ntu_skeleton(
    path: Path,
    bodies_per_frame: list[int],
    rng: np.random.Generator,
    *,
    crlf: bool = False,
    body_ids: list[list[int]] | None = None,
    motion: list[float] | None = None,
    xyz: np.ndarray | None = None,
) -> NtuFile:
    """Write a valid ``.skeleton`` file.

    Args:
        bodies_per_frame: number of bodies listed in each frame (0 allowed).
        body_ids: optional explicit bodyIDs per frame (default: BODY_ID_BASE + position).
        motion: optional per-position motion scale (std of the per-frame jitter), for energy ranking tests.
        xyz: optional coordinates ``[T, bodies, 25, 3]`` to write instead of the random ones.
    """
    f = NtuFile(path=path, name=path.stem)
    lines = [str(len(bodies_per_frame))]
    base = rng.uniform(-0.5, 0.5, size=(8, 25, 3)) + np.array([0.0, 0.0, 3.0])
    for t, nb in enumerate(bodies_per_frame):
        lines.append(str(nb))
        ids_t, xyz_t = [], []
        for b in range(nb):
            bid = body_ids[t][b] if body_ids is not None else BODY_ID_BASE + 1000 + b
            scale = motion[b] if motion is not None else 0.05
            xyz_b = base[b] + rng.normal(scale=scale, size=(25, 3)) if xyz is None else xyz[t, b]
            info = [str(bid), "0", "1", "1", "1", "1", "0", _fmt(rng.normal() * 0.1), _fmt(rng.normal() * 0.1), "2"]
            lines.append(" ".join(info))
            lines.append("25")
            jl, exact = _joint_block(xyz_b, rng)
            lines.extend(jl)
            ids_t.append(bid)
            xyz_t.append(exact)
        f.body_ids.append(ids_t)
        f.xyz.append(xyz_t)
    nl = "\r\n" if crlf else "\n"
    path.write_bytes((nl.join(lines) + nl).encode("ascii"))
    return f


def expected_hitrs(f: NtuFile) -> np.ndarray:
    """``[T, 2, 25, 3]``: the first two bodies of each frame, file order."""
    out = np.zeros((len(f.xyz), 2, 25, 3), dtype=np.float32)
    for t, bodies in enumerate(f.xyz):
        for m, xyz in enumerate(bodies[:2]):
            out[t, m] = xyz
    return out


def make_ntu_fixture(root: Path, seed: int = 0) -> dict[str, NtuFile]:
    """The NTU fixture set in ``root``: 5 valid files + 1 truncated one (+ 1 on the missing list).

    - ``S001C002P001R001A001``: xsub train (P001), xview train (C002), a 0-body frame;
    - ``S001C001P003R001A002``: xsub test (P003), xview test (C001), 3 bodies in some frames;
    - ``S002C003P001R002A050``: two-person class A050;
    - ``S002C001P003R002A010``: CRLF line endings;
    - ``S001C002P005R002A008``: valid, but on the official missing-skeleton list;
    - ``S003C002P003R001A005``: truncated mid-joint block (bad).
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = {}
    files["zero_body"] = write_ntu_skeleton(root / "S001C002P001R001A001.skeleton", [1, 1, 0, 1, 1], rng)
    files["three_bodies"] = write_ntu_skeleton(root / "S001C001P003R001A002.skeleton", [2, 3, 3, 1], rng)
    files["two_person"] = write_ntu_skeleton(root / "S002C003P001R002A050.skeleton", [2, 2, 2, 2, 2, 2], rng)
    files["crlf"] = write_ntu_skeleton(root / "S002C001P003R002A010.skeleton", [1, 1, 1], rng, crlf=True)
    files["missing_listed"] = write_ntu_skeleton(root / "S001C002P005R002A008.skeleton", [1, 1], rng)
    trunc = write_ntu_skeleton(root / "S003C002P003R001A005.skeleton", [1, 1, 1], rng)
    lines = trunc.path.read_text().splitlines()
    # Cut inside frame 2's joint block: header(1) + frame 1 (1 + 1 + 1 + 25) + frame 2 count/body/joints + 10 joints.
    trunc.path.write_text("\n".join(lines[: 1 + 28 + 3 + 10]) + "\n")
    files["truncated"] = trunc
    return files


def write_missing_lists(root: Path, names: list[str]) -> tuple[Path, Path]:
    """The same names as the official variant (3-line header) and a header-less peer copy."""
    root.mkdir(parents=True, exist_ok=True)
    official = root / "official.txt"
    official.write_text(
        f"{len(names)} of the captured samples in the \"NTU RGB+D\" dataset have missing or incomplete skeleton data.\n"
        "If you are working on skeleton-based analysis, please ignore these files in your training and testing "
        "procedures.\n\n" + "".join(n + "\n" for n in names)
    )
    bare = root / "bare.txt"
    bare.write_text("\n".join(names))  # peer copies: no header, no trailing newline
    return official, bare


@dataclass
class PkuFixture:
    skeletons: Path
    labels: Path
    split: Path
    sequences: dict[str, np.ndarray]  # name -> [T, 2, 25, 3] float32
    instances: dict[str, list[tuple[int, int, int, int]]]


def write_pku_fixture(root: Path, seed: int = 0) -> PkuFixture:
    """Two Part I videos (one train, one test) with 150-float lines, leading spaces, a part-time second person.

    ``0002-L`` (T = 20): 3 instances, one starting at frame 1 and one ending at the last frame (label file .txt);
    ``0291-M`` (T = 12): 1 instance, label file with the ``.label`` extension.
    """
    rng = np.random.default_rng(seed)
    sk, lb = root / "skeletons", root / "labels"
    sk.mkdir(parents=True, exist_ok=True)
    lb.mkdir(parents=True, exist_ok=True)
    sequences, instances = {}, {}
    specs = {
        "0002-L": (20, [(3, 1, 6, 1), (17, 8, 12, 2), (51, 15, 20, 2)], ".txt"),
        "0291-M": (12, [(9, 2, 10, 1)], ".label"),
    }
    for name, (t, inst, ext) in specs.items():
        seq = np.zeros((t, 2, 25, 3), dtype=np.float32)
        rows = []
        for i in range(t):
            vals = rng.uniform(-1, 3, size=(2, 25, 3))
            if i % 3 == 0:
                vals[1] = 0.0  # second person absent in some frames
            strs = [f"{v:f}" for v in vals.reshape(-1)]
            seq[i] = np.array([float(s) for s in strs], dtype=np.float32).reshape(2, 25, 3)
            rows.append(" ".join(strs))
        # Lines after the first start with a space, as in the distributed files.
        (sk / f"{name}.txt").write_text(rows[0] + "\n" + "".join(" " + r + "\n" for r in rows[1:]))
        (lb / f"{name}{ext}").write_text("".join(f"{a},{b},{c},{d}\n" for a, b, c, d in inst))
        sequences[name] = seq
        instances[name] = inst
    split = root / "cross-subject.txt"
    split.write_text("Training videos: \n0002-L, 0003-L, \nValidataion videos: \n0291-M, 0292-M,\n")
    return PkuFixture(sk, lb, split, sequences, instances)


def write_ctrgcn_npz(path: Path, seed: int = 0, num_classes: int = 60) -> dict[str, object]:
    """``x_train (4, 300, 150)`` / ``x_test (2, 300, 150)`` float32, zero tails, one single-actor sample;
    one-hot float64 labels. Returns the valid lengths, labels and raw arrays."""
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {}
    arrays = {}
    for part, n in (("train", 4), ("test", 2)):
        x = np.zeros((n, 300, 150), dtype=np.float32)
        lengths = rng.integers(5, 40, size=n)
        labels = rng.integers(0, num_classes, size=n)
        for i in range(n):
            x[i, : lengths[i]] = rng.normal(size=(lengths[i], 150)).astype(np.float32)
        x[1, :, 75:] = 0.0  # a single-actor sample: actor 2 all zero
        y = np.zeros((n, num_classes), dtype=np.float64)
        y[np.arange(n), labels] = 1.0
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y
        out[f"lengths_{part}"], out[f"labels_{part}"], out[f"x_{part}"] = lengths, labels, x
    np.savez(path, **arrays)
    return out


def write_stgcn(root: Path, part: str = "train", seed: int = 0) -> dict[str, object]:
    """``{part}_data.npy`` ``(3, 3, 300, 25, 2)`` + ``{part}_label.pkl`` = ``(names with .skeleton, labels)``.

    Names are deliberately not sorted (os.listdir order in the original scripts)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = ["S002C001P003R001A010.skeleton", "S001C002P001R002A050.skeleton", "S001C001P002R001A001.skeleton"]
    labels = [9, 49, 0]
    lengths = [30, 12, 300]
    data = np.zeros((3, 3, 300, 25, 2), dtype=np.float32)
    for i, t in enumerate(lengths):
        data[i, :, :t, :, 0] = rng.normal(size=(3, t, 25))
    data[1, :, :12, :, 1] = rng.normal(size=(3, 12, 25))  # two-person sample
    np.save(root / f"{part}_data.npy", data)
    with open(root / f"{part}_label.pkl", "wb") as f:
        pickle.dump((names, labels), f)
    return {"names": names, "labels": labels, "lengths": lengths, "data": data}


def write_pyskl(path: Path, seed: int = 0) -> dict[str, object]:
    """A PYSKL pickle with two 3-D annotations (one with one person) and an xsub split dict."""
    rng = np.random.default_rng(seed)
    anns = [
        {
            "frame_dir": "S001C001P001R001A001",
            "total_frames": 7,
            "label": 0,
            "keypoint": rng.normal(size=(2, 7, 25, 3)).astype(np.float32),
        },
        {
            "frame_dir": "S001C002P003R001A013",
            "total_frames": 5,
            "label": 12,
            "keypoint": rng.normal(size=(1, 5, 25, 3)).astype(np.float32),
        },
    ]
    split = {"xsub_train": ["S001C001P001R001A001"], "xsub_val": ["S001C002P003R001A013"]}
    payload = {"split": split, "annotations": anns}
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    return payload
