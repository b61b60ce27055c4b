"""Synthetic motion generator (hitrs_fast.data.synthetic) and the skeleton constants it relies on."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from hitrs_fast.data import skeleton as sk
from hitrs_fast.data import synthetic as syn
from hitrs_fast.data.store import SkeletonStore

SMALL = dict(samples_per_class=6, num_classes=5, num_subjects=6)


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory) -> SkeletonStore:
    root = tmp_path_factory.mktemp("syn") / "trimmed"
    return SkeletonStore(syn.write_synthetic(root, "trimmed", seed=3, two_person_prob=0.5, **SMALL))


# ---------------------------------------------------------------------------------------------- skeleton


def test_bone_pairs_match_spec_and_parents():
    assert len(sk.JOINT_NAMES) == sk.NUM_JOINTS == 25
    assert sk.BONE_PAIRS[0] == (0, 1) and sk.BONE_PAIRS[20] == (20, 20) and sk.BONE_PAIRS[21] == (21, 22)
    assert sk.PARENTS == tuple(b for _, b in sk.BONE_PAIRS)
    assert sum(a == b for a, b in sk.BONE_PAIRS) == 1  # only the SpineShoulder root bone
    assert len(sk.STGCN_EDGES) == 24


def test_kinematic_tree_is_the_bone_tree_rerooted_at_spine_base():
    kp = sk.KINEMATIC_PARENTS
    assert kp[0] == -1 and sum(p == -1 for p in kp) == 1
    assert {frozenset(e) for e in sk.STGCN_EDGES} == {frozenset((v, p)) for v, p in enumerate(kp) if p >= 0}
    seen = set()
    for v in sk.KINEMATIC_ORDER:  # parents come before children
        assert kp[v] == -1 or kp[v] in seen
        seen.add(v)
    assert seen == set(range(25))


def test_flip_permutation_swaps_left_and_right():
    perm = sk.FLIP_PERMUTATION
    assert sorted(perm) == list(range(25))
    assert all(perm[perm[i]] == i for i in range(25))
    for i, name in enumerate(sk.JOINT_NAMES):
        expect = name.replace("Left", "#").replace("Right", "Left").replace("#", "Right")
        assert sk.JOINT_NAMES[perm[i]] == expect


# ---------------------------------------------------------------------------------------------- generator


def test_determinism_for_a_seed():
    a = list(syn.iter_synthetic("trimmed", seed=5, samples_per_class=2, num_classes=3, num_subjects=3,
                                two_person_prob=0.5))
    b = list(syn.iter_synthetic("trimmed", seed=5, samples_per_class=2, num_classes=3, num_subjects=3,
                                two_person_prob=0.5))
    c = list(syn.iter_synthetic("trimmed", seed=6, samples_per_class=2, num_classes=3, num_subjects=3,
                                two_person_prob=0.5))
    assert [s.name for s in a] == [s.name for s in b]
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a, b, strict=True))
    assert not all(x.data.shape == y.data.shape and np.array_equal(x.data, y.data) for x, y in zip(a, c, strict=True))


def test_sample_does_not_depend_on_dataset_size():
    # Per-sample seeds: sample (class 1, index 1) is identical whether 2 or 4 samples per class are drawn.
    small = {s.name: s.data for s in syn.iter_synthetic("trimmed", samples_per_class=2, num_classes=3,
                                                       num_subjects=3)}
    big = {s.name: s.data for s in syn.iter_synthetic("trimmed", samples_per_class=4, num_classes=3,
                                                     num_subjects=3)}
    for name, data in small.items():
        np.testing.assert_array_equal(big[name], data)


@pytest.mark.parametrize("action", list(range(len(syn.ACTIONS))))
def test_bone_lengths_constant_without_noise(action):
    subject = syn.make_subject(4, seed=1)
    x = syn.synthesize_body(action, subject, np.random.default_rng(action), noise=False)
    assert x.ndim == 3 and x.shape[1:] == (25, 3) and x.dtype == np.float32 and x.shape[0] >= 40
    child = np.arange(1, 25)
    parent = np.array(sk.KINEMATIC_PARENTS[1:])
    lengths = np.linalg.norm(x[:, child].astype(np.float64) - x[:, parent], axis=-1)  # [T, 24]
    np.testing.assert_allclose(lengths, np.broadcast_to(subject.bone_lengths[1:], lengths.shape), atol=2e-6)
    # ... and the sensor noise really perturbs them.
    noisy = syn.synthesize_body(action, subject, np.random.default_rng(action), noise=True)
    noisy_len = np.linalg.norm(noisy[:, child].astype(np.float64) - noisy[:, parent], axis=-1)
    assert np.abs(noisy_len - subject.bone_lengths[1:]).max() > 1e-3


def test_subjects_differ_and_are_left_right_symmetric():
    a, b = syn.make_subject(0), syn.make_subject(1)
    assert not np.allclose(a.bone_lengths, b.bone_lengths)
    for left, right in zip(sk.LEFT_JOINTS, sk.RIGHT_JOINTS, strict=True):
        assert a.bone_lengths[left] == a.bone_lengths[right]


def test_camera_space_ranges():
    x = syn.synthesize_body("wave", syn.make_subject(2), np.random.default_rng(0))
    root_z = x[:, sk.JOINT_INDEX["SpineBase"], 2]
    assert 2.1 < root_z.min() and root_z.max() < 4.0                 # the body stands 2.3-3.8 m away
    assert 1.0 < x[..., 2].min() and x[..., 2].max() < 4.6           # limbs reach < ~1 m from it
    assert x[:, sk.JOINT_INDEX["Head"], 1].mean() > x[:, sk.JOINT_INDEX["SpineBase"], 1].mean() + 0.4  # upright
    assert -1.5 < x[..., 1].min() and x[..., 1].max() < 1.6


def test_class_groups_cover_the_actions():
    reversed_names = set(syn.REVERSED_PAIRS) | set(syn.REVERSED_PAIRS.values())
    groups = [reversed_names, set(syn.PHASE_ORDER_CLASSES), set(syn.PERIODIC_ACTIONS), set(syn.INTERACTIONS)]
    assert all(g <= set(syn.ACTIONS) for g in groups)
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # disjoint
    assert len(syn.PERIODIC_ACTIONS) < len(syn.ACTIONS) / 4          # periodic actions are a minority
    assert len(syn.REVERSED_PAIRS) >= 4


@pytest.mark.parametrize("base", list(syn.REVERSED_PAIRS))
def test_reversed_pairs_are_the_same_curves_played_backwards(base):
    reverse = syn.REVERSED_PAIRS[base]
    for k in range(4):
        forward = syn.action_angles(base, np.random.default_rng([7, k]))
        backward = syn.action_angles(reverse, np.random.default_rng([7, k]))
        np.testing.assert_array_equal(backward, forward[::-1])
        assert np.abs(forward - forward[::-1]).max() > 20 * np.pi / 180  # not a palindrome: direction matters


def _noise_free(action: str, k: int) -> np.ndarray:
    return syn.synthesize_body(action, syn.make_subject(k % 3), np.random.default_rng([11, k]), noise=False)


def _height(x: np.ndarray, joint: str) -> np.ndarray:
    """Height of a joint above SpineBase at frame 0, camera pitch ignored (a few degrees)."""
    return x[:, sk.JOINT_INDEX[joint], 1] - x[0, sk.JOINT_INDEX["SpineBase"], 1]


def test_reversed_pairs_in_the_data():
    for k in range(3):
        sit, stand = _noise_free("sit down", k), _noise_free("stand up", k)
        assert _height(sit, "SpineBase")[-1] < -0.2 < _height(stand, "SpineBase")[-1] - _height(stand, "SpineBase")[0]
        pick, put = _noise_free("pick up", k), _noise_free("put down", k)
        # Picking up ends with the hands raised to the waist; putting down ends with them hanging at rest.
        assert _height(pick, "HandRight")[-1] > _height(pick, "HandRight")[0] + 0.2
        assert _height(put, "HandRight")[0] > _height(put, "HandRight")[-1] + 0.2


def test_phase_order_classes_share_moves_in_another_order():
    def order(x: np.ndarray) -> list[str]:
        hand = _height(x, "HandLeft")          # highest when stretching
        head = _height(x, "Head")              # lowest when bowing
        foot = x[:, sk.JOINT_INDEX["AnkleRight"], 1] - x[:, sk.JOINT_INDEX["AnkleLeft"], 1]  # kick
        times = {"stretch": hand.argmax(), "bow": head.argmin(), "kick": foot.argmax()}
        return sorted(times, key=times.get)

    for k in range(3):
        assert order(_noise_free("stretch-bow-kick", k)) == ["stretch", "bow", "kick"]
        assert order(_noise_free("bow-stretch-kick", k)) == ["bow", "stretch", "kick"]


def test_drink_water_is_multi_phase_and_returns_to_rest():
    for k in range(3):
        x = _noise_free("drink water", k)
        hand_to_head = np.linalg.norm(x[:, sk.JOINT_INDEX["HandRight"]] - x[:, sk.JOINT_INDEX["Head"]], axis=-1)
        near = hand_to_head < 0.3
        assert near.any() and not near[0] and not near[-1]         # reach, drink, lower
        assert x.shape[0] >= 2 * syn.FPS                            # at least 2 s


def test_periodic_actions_repeat():
    for name, joint in (("wave", "HandRight"), ("walk in place", "KneeLeft")):
        x = _noise_free(name, 0)
        y = _height(x, joint) if name == "walk in place" else x[:, sk.JOINT_INDEX[joint], 0]
        y = y - np.convolve(y, np.ones(15) / 15, mode="same")  # remove the slow envelope
        core = y[len(y) // 4: -len(y) // 4]
        crossings = np.count_nonzero(np.diff(np.sign(core - core.mean())) != 0)
        assert crossings >= 4, name


def test_interactions_move_two_people_together(tmp_path):
    names = ("handshake", "push")
    store = SkeletonStore(syn.write_synthetic(tmp_path / "i", samples_per_class=3, num_subjects=3,
                                              two_person_prob=0.0))
    spine = sk.JOINT_INDEX["SpineBase"]
    for i in np.flatnonzero(np.isin(store.labels, [syn.ACTIONS.index(n) for n in names])):
        x = np.asarray(store.sequence(int(i)))
        assert store.num_bodies[i] == 2 and np.all(np.abs(x).sum(axis=(2, 3)) > 0)  # both present throughout
        gap = np.linalg.norm(x[:, 0, spine, [0, 2]] - x[:, 1, spine, [0, 2]], axis=-1)
        assert 0.6 < gap[0] < 1.3                                   # facing each other at arm's length
        if syn.ACTIONS[store.labels[i]] == "push":
            assert gap[-1] > gap[0] + 0.15                          # the partner was shoved away
        else:
            hands = np.linalg.norm(x[:, 0, sk.JOINT_INDEX["HandRight"]] - x[:, 1, sk.JOINT_INDEX["HandRight"]], axis=-1)
            assert hands.min() < 0.6 < hands[0]                     # the hands meet
    one_person = ~np.isin(store.labels, [syn.ACTIONS.index(n) for n in names])
    assert np.all(store.num_bodies[one_person] == 1)


def test_trimmed_store(trimmed):
    st = trimmed
    assert len(st) == 5 * 6
    assert st.data.shape[1:] == (2, 25, 3)
    assert st.lengths.min() >= 40 and st.lengths.max() <= 200
    assert sorted(np.unique(st.labels).tolist()) == list(range(5))
    assert np.bincount(st.labels).tolist() == [6] * 5
    assert st.info["source"] == "synthetic" and st.info["class_names"] == list(syn.ACTIONS[:5])
    assert st.info["num_classes"] == 5 and st.info["fps"] == syn.FPS
    assert st.frame_labels(0) is None
    assert set(st.num_bodies.tolist()) <= {1, 2} and (st.num_bodies == 2).any()
    assert np.all(st.performer >= 1) and np.all(np.isin(st.camera, [1, 2, 3]))
    meta = json.loads((st.root / "meta.json").read_text())
    assert meta["synthetic_kind"] == "trimmed"


def test_splits_disjoint_by_subject(trimmed):
    train, test = trimmed.split_indices("train"), trimmed.split_indices("test")
    assert np.intersect1d(train, test).size == 0
    assert np.union1d(train, test).tolist() == list(range(len(trimmed)))
    p_train, p_test = set(trimmed.performer[train].tolist()), set(trimmed.performer[test].tolist())
    assert p_train and p_test and not p_train & p_test
    assert all(syn.is_test_subject(p - 1) for p in p_test)
    assert set(trimmed.labels[test].tolist()) == set(range(5))  # every class in both splits


def test_second_body_probability(tmp_path):
    one = SkeletonStore(syn.write_synthetic(tmp_path / "one", two_person_prob=0.0, **SMALL))
    assert np.all(one.num_bodies == 1)
    assert np.all(one.data[:, 1] == 0)
    two = SkeletonStore(syn.write_synthetic(tmp_path / "two", two_person_prob=1.0, **SMALL))
    assert np.all(two.num_bodies == 2)


def test_untrimmed_store(tmp_path):
    st = SkeletonStore(syn.write_synthetic(tmp_path / "u", "untrimmed", num_sequences=4, num_classes=6,
                                           num_subjects=3))
    assert len(st) == 4 and np.all(st.labels == -1)
    for i in range(len(st)):
        fl = np.asarray(st.frame_labels(i))
        assert fl.shape == (st.lengths[i],)
        assert fl.min() == 0 and fl.max() <= 6 and fl[0] == 0 and fl[-1] == 0  # idle at both ends
        starts = np.flatnonzero((fl[1:] != 0) & (fl[:-1] == 0))
        assert 3 <= len(starts) <= 6                                          # 3-6 separated actions
    assert st.info["frame_label_convention"].startswith("0 = background")


def test_long_store(tmp_path):
    st = SkeletonStore(syn.write_synthetic(tmp_path / "l", "long", num_sequences=3, num_subjects=3))
    assert len(st) == 3 and st.lengths.min() >= 381
    periodic = [syn.ACTIONS.index(n) + 1 for n in syn.PERIODIC_ACTIONS]
    for i in range(len(st)):
        fl = np.asarray(st.frame_labels(i))
        assert (fl > 0).mean() > 0.8  # mostly action, short gaps
        x = st.sequence(i)[:, 0]
        assert np.all(np.any(x != 0, axis=(1, 2)))  # the actor is present in every frame
        change = np.flatnonzero(np.diff(fl) != 0) + 1
        runs = np.split(fl, change)
        # one pause length at the sequence's tempo (longer only where the next posture is far)
        pauses = [len(r) for r in runs if r[0] == 0]
        assert min(pauses) >= syn._LONG_PAUSE_SECONDS * syn.FPS * 0.85 and pauses.count(min(pauses)) >= 2
        assert all(len(r) >= syn._LONG_PERIODIC_FRAMES[0] for r in runs if r[0] in periodic)


def _digest(kind: str, **kwargs) -> str:
    """sha256 (16 hex digits) of every sample's name, index fields, frame labels and joints rounded to 0.01 mm
    (the rounding keeps the digest from depending on the last bit of a platform's sin / cos)."""
    h = hashlib.sha256()
    for s in syn.iter_synthetic(kind, **kwargs):
        h.update(s.name.encode())
        h.update(np.int64([s.label, s.camera, s.performer, s.replication]).tobytes())
        h.update(np.round(s.data.astype(np.float64) * 1e5).astype(np.int64).tobytes())
        if s.frame_labels is not None:
            h.update(np.asarray(s.frame_labels, np.int64).tobytes())
    return h.hexdigest()[:16]


def test_trimmed_and_untrimmed_sets_are_those_of_generator_version_2():
    """The long set's change (generator version 3: one pace per sequence) leaves the other kinds as they were:
    the digests were computed with the version-2 code (commit 40fbd15), all 16 classes, second bodies and
    interactions included."""
    small = dict(seed=7, num_subjects=3, two_person_prob=0.5)
    assert _digest("trimmed", samples_per_class=2, **small) == "321b6ec27b860caf"
    assert _digest("untrimmed", num_sequences=6, **small) == "89038197ddbcb4b9"


def test_long_set_phases_follow_the_pace_alone():
    """Under one pace (a long sequence) an action's phases last what the tempo says: two draws of a phased
    action have the same length; without a pace (trimmed) every phase has its own factor."""
    pace = syn._Pace(tempo=1.1, amp=1.0)
    for name in ("drink water", "stand up", "bow-stretch-kick", "push"):
        cls = syn.ACTIONS.index(name)
        steady = {syn._action_motions(cls, np.random.default_rng(k), pace)[0].angles.shape[0] for k in range(4)}
        free = {syn._action_motions(cls, np.random.default_rng(k))[0].angles.shape[0] for k in range(4)}
        assert len(steady) == 1 and len(free) > 1, name
    drink = syn.ACTIONS.index("drink water")
    slow, fast = (syn._action_motions(drink, np.random.default_rng(0), syn._Pace(tempo=t, amp=1.0))[0].angles.shape[0]
                  for t in (1.2, 0.9))
    assert (slow - 1) / (fast - 1) == pytest.approx(1.2 / 0.9, abs=0.02)  # the length follows the tempo


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        syn.write_synthetic(tmp_path / "x", "bogus")
    with pytest.raises(ValueError, match="num_sequences"):
        syn.write_synthetic(tmp_path / "x", "untrimmed", samples_per_class=3)
    with pytest.raises(ValueError, match="num_subjects"):
        syn.write_synthetic(tmp_path / "x", num_subjects=2)
    with pytest.raises(ValueError, match="unknown action"):
        syn.synthesize_body("moonwalk", syn.make_subject(0), np.random.default_rng(0))
    syn.write_synthetic(tmp_path / "y", samples_per_class=1, num_classes=2, num_subjects=3)
    with pytest.raises(FileExistsError):
        syn.write_synthetic(tmp_path / "y", samples_per_class=1, num_classes=2, num_subjects=3)


# ---------------------------------------------------------------------------------------------- cache


def test_cached_synthetic_is_generated_once_under_one_name(tmp_path, capsys):
    path = syn.cached_synthetic(tmp_path, "untrimmed", seed=2, size=3)
    assert path == syn.synthetic_cache_path(tmp_path, "untrimmed", 2, 3) == tmp_path / "synthetic-untrimmed-seed2-n3"
    assert len(SkeletonStore(path)) == 3 and SkeletonStore(path).info["seed"] == 2
    stamp = (path / "meta.json").stat().st_mtime_ns
    assert syn.cached_synthetic(tmp_path, "untrimmed", seed=2, size=3) == path
    assert (path / "meta.json").stat().st_mtime_ns == stamp
    assert capsys.readouterr().out.count("generating") == 1
    with pytest.raises(ValueError, match="synthetic kind 'short'"):
        syn.cached_synthetic(tmp_path, "short", seed=0, size=3)


def test_cached_synthetic_uses_the_set_another_command_wrote_meanwhile(tmp_path, monkeypatch):
    """Two commands sharing a cache generate the same set at once: the one that finishes second used to fail
    with FileExistsError; it now uses the finished set."""
    write = syn.write_synthetic

    def other_command_finishes_first(path, *args, **kwargs):
        write(path, *args, **kwargs)  # the other command's store lands first ...
        return write(path, *args, **kwargs)  # ... so this one finds it there

    monkeypatch.setattr(syn, "write_synthetic", other_command_finishes_first)
    path = syn.cached_synthetic(tmp_path, "long", seed=0, size=3)
    assert len(SkeletonStore(path)) == 3
    monkeypatch.setattr(syn, "write_synthetic", lambda *a, **k: (_ for _ in ()).throw(FileExistsError("x")))
    with pytest.raises(FileExistsError):  # not a finished set of this generator: the error stands
        syn.cached_synthetic(tmp_path / "other", "long", seed=0, size=3)


def test_cached_synthetic_regenerates_a_set_of_another_generator_version(tmp_path, capsys):
    path = syn.cached_synthetic(tmp_path, "long", seed=1, size=3)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["generator_version"] == syn.GENERATOR_VERSION
    (path / "meta.json").write_text(json.dumps({**meta, "generator_version": syn.GENERATOR_VERSION - 1}))
    assert syn.cached_synthetic(tmp_path, "long", seed=1, size=3) == path
    assert json.loads((path / "meta.json").read_text())["generator_version"] == syn.GENERATOR_VERSION
    assert capsys.readouterr().out.count("generating") == 2
