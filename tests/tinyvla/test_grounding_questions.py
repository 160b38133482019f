"""Grounding questions: known answers on hand-made scenes, and the generator on real frames."""

import numpy as np
import pytest

from dtp.errors import InputError
from dtp.tinyvla.grounding import GROUNDING_SEED_BASE, frame_seed
from dtp.tinyvla.questions import QA, ask, candidates, grounding_words
from dtp.tinyvla.scene import MIN_PIXELS, cell_token, scene_from_masks

GRID = (4, 4)  # 16 x 16 px frames, 4 px patches


def _block(r0, c0, h=3, w=3):
    m = np.zeros((16, 16), dtype=bool)
    m[r0 : r0 + h, c0 : c0 + w] = True
    return m


def _scene(extra=None):
    masks = {
        "task_object": _block(5, 5),  # pixels rows 5-7, cols 5-7: all in cell (1, 1)
        "goal": _block(9, 13),  # cell (2, 3)
        "gripper": _block(1, 8),  # cell (0, 2), centroid column 9 px = 2.25 patches
        "distractor_0": _block(12, 1),  # cyan box, cell (3, 0): left of the gripper
        "distractor_1": _block(13, 12),  # orange box, cell (3, 3): right of the gripper
    }
    info = {
        "task_object": {"role": "task_object", "noun": "puck", "colour": "red", "shape": "cylinder"},
        "goal": {"role": "goal", "noun": "ball", "colour": "green", "shape": "sphere"},
        "gripper": {"role": "gripper", "noun": "gripper", "colour": None, "shape": None},
        "distractor_0": {"role": "distractor", "noun": "box", "colour": "cyan", "shape": "box"},
        "distractor_1": {"role": "distractor", "noun": "box", "colour": "orange", "shape": "box"},
    }
    for name, (mask, meta) in (extra or {}).items():
        masks[name], info[name] = mask, meta
    return scene_from_masks(masks, info, GRID)


def test_scene_measures_cells_on_the_grid():
    scene = _scene()
    by = {o.name: o for o in scene.objects}
    assert by["task_object"].cell == (1, 1) and by["task_object"].cells == ((1, 1),) and by["task_object"].pixels == 9
    assert by["goal"].cell == (2, 3)
    # a mask over two cells: the pointing answer is the cell with most pixels
    s = scene_from_masks({"x": _block(1, 2, 5, 5)}, {"x": {"role": "task_object", "noun": "puck", "colour": "red"}}, GRID)
    assert s.objects[0].cells == ((0, 0), (0, 1), (1, 0), (1, 1)) and s.objects[0].cell == (0, 1)
    with pytest.raises(InputError, match="patch grid"):
        scene_from_masks({"x": np.zeros((15, 16), bool)}, {"x": {"role": "task_object", "noun": "puck"}}, GRID)


def test_known_answers_of_every_kind():
    got = {(q.kind, q.question, q.answer) for qs in candidates(_scene()).values() for q in qs}
    expected = {
        ("point", "where is the red puck", "cell_1_1"),
        ("point", "where is the green ball", "cell_2_3"),
        ("point", "where is the gripper", "cell_0_2"),
        ("point", "where is the cyan box", "cell_3_0"),
        ("point", "where is the orange box", "cell_3_3"),
        ("colour", "what colour is the puck", "red"),
        ("colour", "what colour is the ball", "green"),
        # 'what colour is the box' is ambiguous (two boxes): never asked; relations tell them apart
        ("colour_rel", "what colour is the box left of the gripper", "cyan"),
        ("colour_rel", "what colour is the box right of the gripper", "orange"),
        ("colour_rel", "what colour is the box left of the red puck", "cyan"),
        ("colour_rel", "what colour is the box right of the red puck", "orange"),
        # not "... left of the green ball": the orange box sits within half a patch of the ball's column
        ("shape", "what shape is the red object", "cylinder"),
        ("shape", "what shape is the green object", "sphere"),
        ("shape", "what shape is the cyan object", "box"),
        ("shape", "what shape is the orange object", "box"),
        ("count", "how many objects are there", "4"),
        ("count", "how many red objects are there", "1"),
        ("count", "how many green objects are there", "1"),
        ("count", "how many cyan objects are there", "1"),
        ("count", "how many orange objects are there", "1"),
    }
    assert got == expected
    words = set(grounding_words(GRID))
    assert all(w in words for _, q, a in got for w in (*q.split(), a))


def test_ambiguous_and_half_hidden_objects_are_not_asked_about():
    # a second red puck: neither puck can be pointed at or asked about by colour or by noun
    twin = {"distractor_2": (_block(5, 9), {"role": "distractor", "noun": "puck", "colour": "red", "shape": "cylinder"})}
    qs = [q for v in candidates(_scene(twin)).values() for q in v]
    assert not any("puck" in q.question and q.kind in ("point", "colour") for q in qs)
    assert ("count", "how many red objects are there", "2") in {(q.kind, q.question, q.answer) for q in qs}
    # a half-hidden object (fewer than MIN_PIXELS pixels): no count at all, and it cannot be pointed at
    tiny = np.zeros((16, 16), bool)
    tiny[0, 0 : MIN_PIXELS - 1] = True
    hidden = {"distractor_2": (tiny, {"role": "distractor", "noun": "sphere", "colour": "pink", "shape": "sphere"})}
    c = candidates(_scene(hidden))
    assert "count" not in c
    assert not any("pink" in q.question for q in c["point"])


def test_ask_is_seeded_distinct_and_bounded():
    scene = _scene()
    a = ask(scene, np.random.default_rng(5), 6)
    b = ask(scene, np.random.default_rng(5), 6)
    assert a == b and len(a) == 6 and len(set(a)) == 6
    assert all(isinstance(q, QA) for q in a)
    everything = sum(len(v) for v in candidates(scene).values())
    assert len(ask(scene, np.random.default_rng(0), 1000)) == everything


def test_grounding_seeds_are_disjoint_from_demo_and_evaluation_seeds():
    from dtp.envs.demos import DEMO_SEED_LIMIT
    from dtp.seeds import validation_seeds

    train = {frame_seed("train", s, i) for s in range(3) for i in (0, 1, 999_999)}
    val = {frame_seed("val", s, i) for s in range(3) for i in (0, 1, 999_999)}
    assert not train & val
    assert min(train | val) >= GROUNDING_SEED_BASE > DEMO_SEED_LIMIT
    assert max(validation_seeds(10_000, seed=99)) < GROUNDING_SEED_BASE  # evaluation seed sets 0..99


def _project(env, point):
    """Pixel (row, col) of a world point in the env's camera (a pinhole model, independent of the scene code)."""
    model, data = env.sim.model, env.sim.data
    cam = model.camera(env.camera).id
    x, y, z = data.cam_xmat[cam].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[cam])
    f = 0.5 * env.image_size / np.tan(np.radians(model.cam_fovy[cam]) / 2)
    return env.image_size / 2 - f * y / -z, env.image_size / 2 + f * x / -z


def test_pointing_answers_on_real_frames_match_the_simulator():
    """The answer cell of the puck and of each distractor is the patch its 3-D position projects to
    (within one patch: the answer is the patch with most pixels, the projection the object's centre)."""
    from dtp.envs.distractors import DistractorConfig
    from dtp.envs.metaworld_env import make_env
    from dtp.tinyvla.grounding import scene_from_env

    env = make_env("push", distractors=DistractorConfig(count=3))
    try:
        checked = 0
        for i in range(4):
            env.reset(seed=frame_seed("val", 0, i))
            scene = scene_from_env(env, (8, 8))
            by = {o.name: o for o in scene.objects}
            assert {o.name for o in scene.objects} >= {"task_object", "goal", "gripper"}
            points = {("task_object", tuple(env.state[4:7]))}
            points |= {(f"distractor_{j}", d.pos) for j, d in enumerate(env.distractors)}
            for name, pos in points:
                o = by[name]
                if not o.visible:
                    continue
                row, col = (int(v // 12) for v in _project(env, pos))
                assert abs(o.cell[0] - row) <= 1 and abs(o.cell[1] - col) <= 1, (name, o.cell, (row, col))
                checked += 1
            for j, d in enumerate(env.distractors):  # identities: the noun and colour of the placed object
                assert (by[f"distractor_{j}"].noun, by[f"distractor_{j}"].colour) == (d.shape, d.colour)
        assert checked >= 6
    finally:
        env.close()


def test_generator_is_seeded_and_resumable(tmp_path):
    import h5py

    from dtp.tinyvla.grounding import GroundingGenConfig, generate

    kw = dict(split="val", frames=6, tasks=("push", "reach"), shard_size=3, image_size=48, patch_size=8,
              max_arm_steps=10, questions=3)
    a = generate(GroundingGenConfig(out=str(tmp_path / "a"), **kw), progress=False)
    b_cfg = GroundingGenConfig(out=str(tmp_path / "b"), **kw)
    first = generate(b_cfg, progress=False)
    first[1].unlink()  # an interrupted run: the second shard is missing
    b = generate(b_cfg, progress=False)
    assert [p.name for p in a] == [p.name for p in b] == ["shard_00000.h5", "shard_00001.h5"]
    for pa, pb in zip(a, b):
        with h5py.File(pa) as fa, h5py.File(pb) as fb:
            assert np.array_equal(fa["images"][()], fb["images"][()])
            assert list(fa["qa_answer"][()]) == list(fb["qa_answer"][()])
            assert fa["images"].shape == (3, 48, 48, 3)
            assert fa["seeds"][0] == frame_seed("val", 0, 0 if pa.name.endswith("0.h5") else 3)
            cells = [a.decode() for a, k in zip(fa["qa_answer"][()], fa["qa_kind"][()]) if k.decode() == "point"]
            assert all(c in {cell_token(r, q) for r in range(6) for q in range(6)} for c in cells)
    # a folder written with other frame counts is refused, not silently mixed
    from dtp.errors import ConfigError

    with pytest.raises(ConfigError, match="another --out"):
        generate(GroundingGenConfig(out=str(tmp_path / "a"), **{**kw, "shard_size": 4}), progress=False)


def test_scene_from_an_env_that_names_its_objects():
    """The grounded benchmark's API (env.scene + env.instance_segmentation()): names, colours and cells
    come from it; task parts get shape words (puck -> cylinder), lookalikes keep their noun."""
    from types import SimpleNamespace as NS

    from dtp.tinyvla.grounding import scene_from_env

    objs = (NS(name="task_object", role="task_object", shape="puck", colour="red"),
            NS(name="gripper", role="gripper", shape="gripper", colour=None),
            NS(name="lookalike_0", role="lookalike", shape="puck", colour="blue"),
            NS(name="distractor_0", role="distractor", shape="box", colour="white"))
    inst = np.full((16, 16), -1, dtype=np.int16)
    inst[5:8, 5:8] = 0  # cell (1, 1)
    inst[0:3, 12:15] = 1  # cell (0, 3)
    inst[13:16, 0:3] = 2  # cell (3, 0)
    inst[9:12, 9:12] = 3  # cell (2, 2)
    env = NS(scene=NS(objects=objs), instance_segmentation=lambda: inst, task=NS(name="push", goal_site=None))
    scene = scene_from_env(env, GRID)
    got = {(q.question, q.answer) for q in candidates(scene)["point"]}
    assert got == {("where is the red puck", "cell_1_1"), ("where is the gripper", "cell_0_3"),
                   ("where is the blue puck", "cell_3_0"), ("where is the white box", "cell_2_2")}
    assert {o.name: o.shape for o in scene.objects} == {"task_object": "cylinder", "gripper": None,
                                                        "lookalike_0": "cylinder", "distractor_0": "box"}
    assert not any(q.question == "what colour is the puck" for q in candidates(scene).get("colour", []))


def test_patch_word_maps_mark_each_objects_patches_with_its_words():
    from dtp.tinyvla.scene import patch_word_maps

    scene = _scene()
    words = ["red", "puck", "cylinder", "box", "gripper", "green", "purple"]
    maps = patch_word_maps(scene, words).reshape(len(words), *GRID)  # (W, rows, cols)
    cell = lambda r, c: np.eye(16, dtype=bool)[r * 4 + c].reshape(GRID)  # noqa: E731
    for w in ("red", "puck", "cylinder"):  # the task object's words, only at its patch
        assert (maps[words.index(w)] == cell(1, 1)).all()
    assert (maps[words.index("box")] == (cell(3, 0) | cell(3, 3))).all()  # two boxes
    assert (maps[words.index("green")] == cell(2, 3)).all()
    assert maps[words.index("gripper")][0, 2] and not maps[words.index("purple")].any()  # no purple object
    # a block spanning two patches marks both
    spread = scene_from_masks({"o": _block(2, 2, 2, 4)}, {"o": {"role": "distractor", "noun": "box", "colour": "red",
                                                               "shape": "box"}}, GRID)
    assert patch_word_maps(spread, ["red"]).reshape(GRID)[0].tolist() == [True, True, False, False]
