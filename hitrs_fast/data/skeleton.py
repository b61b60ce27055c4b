"""The NTU RGB+D / PKU-MMD 25-joint skeleton (Kinect v2 order; table in ``docs/data.md``).

Constants only (plain Python tuples, no numpy/torch import), so every reader, augmentation and model
can share them without pulling anything in. All indices are 0-based.

- :data:`JOINT_NAMES` ``[V]``: Kinect v2 joint names in storage order.
- :data:`BONE_PAIRS` ``[V]`` of ``(v1, v2)``: ``bone[v1] = x[v1] - x[v2]`` (the 25 pairs shared by Hi-TRS,
  AimCLR, MAMP and HiCo; ``(20, 20)`` is the zero root bone at SpineShoulder).
- :data:`PARENTS` ``[V]``: ``PARENTS[v1] = v2`` for each bone pair, so ``x - x[..., PARENTS, :]`` is the bone
  view; the root SpineShoulder is its own parent (zero bone), exactly as the pair list has it.
- :data:`KINEMATIC_PARENTS` ``[V]``: the same 24 edges re-rooted at SpineBase (parent -1) for forward
  kinematics (the synthetic generator), where the pelvis must be the root.
- :data:`KINEMATIC_ORDER`: a topological order of :data:`KINEMATIC_PARENTS` (parents before children).
- :data:`FLIP_PERMUTATION` ``[V]``: left/right joint swap (Levigty/AimCLR ``transform_order['ntu']``).
- :data:`STGCN_EDGES`: the 24 undirected edges without the self-loop (ST-GCN graph, centre joint 20).
"""

from __future__ import annotations

__all__ = [
    "BONE_PAIRS",
    "BONE_PAIRS_1BASED",
    "CENTRE_JOINT",
    "FLIP_PERMUTATION",
    "JOINT_INDEX",
    "JOINT_NAMES",
    "KINEMATIC_ORDER",
    "KINEMATIC_PARENTS",
    "LEFT_JOINTS",
    "NUM_JOINTS",
    "PARENTS",
    "RIGHT_JOINTS",
    "STGCN_EDGES",
]

NUM_JOINTS = 25

JOINT_NAMES: tuple[str, ...] = (
    "SpineBase",      # 0
    "SpineMid",       # 1
    "Neck",           # 2
    "Head",           # 3
    "ShoulderLeft",   # 4
    "ElbowLeft",      # 5
    "WristLeft",      # 6
    "HandLeft",       # 7
    "ShoulderRight",  # 8
    "ElbowRight",     # 9
    "WristRight",     # 10
    "HandRight",      # 11
    "HipLeft",        # 12
    "KneeLeft",       # 13
    "AnkleLeft",      # 14
    "FootLeft",       # 15
    "HipRight",       # 16
    "KneeRight",      # 17
    "AnkleRight",     # 18
    "FootRight",      # 19
    "SpineShoulder",  # 20
    "HandTipLeft",    # 21
    "ThumbLeft",      # 22
    "HandTipRight",   # 23
    "ThumbRight",     # 24
)

JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

# The pairs as yuxiaochen1103/Hi-TRS lists them, 1-based; kept verbatim so a reader can check them against it.
BONE_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10), (12, 11),
    (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21), (22, 23), (23, 8),
    (24, 25), (25, 12),
)

BONE_PAIRS: tuple[tuple[int, int], ...] = tuple((a - 1, b - 1) for a, b in BONE_PAIRS_1BASED)

PARENTS: tuple[int, ...] = tuple(b for _, b in BONE_PAIRS)

CENTRE_JOINT = 20  # SpineShoulder: the bone-pair root and the ST-GCN centre

STGCN_EDGES: tuple[tuple[int, int], ...] = tuple((a, b) for a, b in BONE_PAIRS if a != b)


def _reroot(edges: tuple[tuple[int, int], ...], root: int, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Parents and a breadth-first order of the tree ``edges`` rooted at ``root``."""
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    parents = [-2] * n
    parents[root] = -1
    order = [root]
    for v in order:  # order grows while we walk it: a breadth-first traversal
        for w in sorted(adj[v]):
            if parents[w] == -2:
                parents[w] = v
                order.append(w)
    if len(order) != n:
        raise AssertionError("the NTU bone pairs do not form a spanning tree")
    return tuple(parents), tuple(order)


KINEMATIC_PARENTS, KINEMATIC_ORDER = _reroot(STGCN_EDGES, 0, NUM_JOINTS)

FLIP_PERMUTATION: tuple[int, ...] = (
    0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22,
)

LEFT_JOINTS: tuple[int, ...] = tuple(i for i, n in enumerate(JOINT_NAMES) if n.endswith("Left"))
RIGHT_JOINTS: tuple[int, ...] = tuple(i for i, n in enumerate(JOINT_NAMES) if n.endswith("Right"))
