"""The grounded variant: named colours, lookalikes, custom splits, plain kept apart."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtp.envs import DistractorConfig, all_instruction_words, make_env
from dtp.envs.grounding import REFERENTS
from dtp.envs.metaworld_env import DISTRACTOR, LOOKALIKE, TASK_OBJECT
from dtp.envs.variants import GROUNDED, PLAIN, VARIANTS, get_variant
from dtp.errors import ConfigError

SEEDS = [1_010_000 + i for i in range(3)]  # validation seed set 1


@pytest.fixture(scope="module")
def push_env():
    env = make_env("push", distractors=DistractorConfig(count=2), variant="grounded")
    yield env
    env.close()


def test_grounded_is_the_default_and_plain_stays_available():
    assert get_variant("grounded") is GROUNDED and set(VARIANTS) == {"plain", "grounded"}
    env = make_env("reach")
    try:
        assert env.variant.name == "grounded"
    finally:
        env.close()
    with pytest.raises(ConfigError, match="plain"):
        get_variant("fancy")


def test_scene_is_seeded_and_reproducible(push_env):
    a, _ = push_env.reset(seed=SEEDS[0])
    scene_a = push_env.scene.to_dict()
    b, _ = push_env.reset(seed=SEEDS[0])
    assert a["image"].tobytes() == b["image"].tobytes() and push_env.scene.to_dict() == scene_a
    other = make_env("push", distractors=DistractorConfig(count=2), variant="grounded")
    try:
        c, _ = other.reset(seed=SEEDS[0])
        assert c["image"].tobytes() == a["image"].tobytes() and other.scene.to_dict() == scene_a
    finally:
        other.close()
    scenes = set()
    for s in range(1_010_000, 1_010_008):
        push_env.reset(seed=s)
        g = push_env.grounding
        scenes.add((g.colours["task_object"][0], g.colours["goal"][0], len(g.lookalikes)))
    assert len(scenes) >= 4  # colours and lookalike counts change with the seed


@pytest.mark.parametrize("task", sorted(REFERENTS))
def test_instruction_names_the_colours_the_scene_shows(task):
    env = make_env(task, image_size=128, variant="grounded")
    palette = GROUNDED.split("train").palette
    try:
        for seed in SEEDS:
            obs, _ = env.reset(seed=seed)
            scene = env.scene
            named = [o for o in (scene.task_object, scene.goal) if o is not None and o.colour is not None]
            assert {o.role for o in named} == {r.role for r in REFERENTS[task]}
            words = obs["instruction"].split()
            inst = env.instance_segmentation()
            for obj in named:
                assert obj.colour in words and obj.colour in palette
                assert obj.rgb == palette[obj.colour]
                pixels = obs["image"][inst == scene.objects.index(obj)].astype(float) / 255
                assert len(pixels) > 0, f"{task}: the {obj.role} is not visible"
                if obj.role == "task_object" and task == "button-press-topdown":
                    continue  # the button's rod and rim are not recoloured, only its cap
                # the rendered colour is nearer its palette RGB than any other palette colour's
                mean = pixels.mean(axis=0)
                lit = mean / max(mean.max(), 1e-6)
                dist = {n: np.linalg.norm(lit - np.asarray(c) / max(max(c), 1e-6)) for n, c in palette.items()}
                assert min(dist, key=dist.get) == obj.colour, (task, seed, obj.colour, mean)
            # no other colour word of the palette appears in the instruction
            assert {w for w in words if w in palette} == {o.colour for o in named}
    finally:
        env.close()


@pytest.mark.parametrize("task", sorted(REFERENTS))
def test_lookalikes_copy_shape_and_size_in_other_colours_without_overlap(task):
    env = make_env(task, distractors=DistractorConfig(count=2), variant="grounded")
    model = env.sim.model
    lo, hi = GROUNDED.split("train").lookalikes
    try:
        counts = []
        for seed in range(1_010_000, 1_010_006):
            env.reset(seed=seed)
            scene = env.scene
            looks = scene.lookalikes
            counts.append(len(looks))
            assert len(looks) <= hi
            colours = [o.colour for o in looks] + [o.colour for o in (scene.task_object, scene.goal) if o]
            assert len(set(colours)) == len(colours)  # every named part and lookalike has its own colour
            for look in looks:
                real = scene.get(look.mimics)
                if real.role == "goal":
                    site = real.site_ids[0]
                    (geom,) = look.geom_ids
                    assert model.geom_type[geom] == model.site_type[site]
                    np.testing.assert_allclose(model.geom_size[geom], model.site_size[site])
                else:
                    assert len(look.geom_ids) == len(real.geom_ids) > 0
                    for g_look, g_real in zip(look.geom_ids, real.geom_ids):
                        assert model.geom_type[g_look] == model.geom_type[g_real]
                        np.testing.assert_allclose(model.geom_size[g_look], model.geom_size[g_real])
                        assert model.geom_contype[g_look] == model.geom_conaffinity[g_look] == 0
                # footprints apart: centre distance beyond the parts' sizes
                part = env._grounding_ids.slots[look.mimics][0]
                for other in [o for o in (scene.task_object, scene.goal) if o] + [o for o in looks if o is not look]:
                    gap = np.abs(np.subtract(look.pos[:2], other.pos[:2]))
                    assert np.any(gap >= part.half_extent), (task, seed, look.name, other.name)
        assert max(counts) >= 1 and min(counts) >= min(lo, 1 if task not in ("button-press-topdown",) else 0)
    finally:
        env.close()


def test_lookalikes_leave_the_physics_alone():
    plain = make_env("drawer-open", variant="plain")
    grounded = make_env("drawer-open", variant="grounded")
    try:
        assert grounded.sim.model.nq == plain.sim.model.nq and grounded.sim.model.nv == plain.sim.model.nv
        _, a = plain.reset(seed=5)
        _, b = grounded.reset(seed=5)
        np.testing.assert_allclose(a["state"], b["state"])
        for _ in range(30):
            sa = plain.step(plain.expert_action())[4]["state"]
            sb = grounded.step(grounded.expert_action())[4]["state"]
        np.testing.assert_allclose(sa, sb, atol=1e-9)
    finally:
        plain.close()
        grounded.close()


def test_segmentation_tells_lookalikes_apart(push_env):
    push_env.reset(seed=SEEDS[1], options={"lookalike_count": 3})
    scene = push_env.scene
    assert len(scene.lookalikes) == 3
    labels = push_env.segmentation()
    assert {TASK_OBJECT, LOOKALIKE, DISTRACTOR} <= set(np.unique(labels).tolist())
    inst = push_env.instance_segmentation()
    for i, obj in enumerate(scene.objects):
        if obj.role == "lookalike":
            assert (labels[inst == i] == LOOKALIKE).all()
        if obj.role == "task_object":
            assert (labels[inst == i] == TASK_OBJECT).all() and (inst == i).any()
    push_env.reset(seed=SEEDS[1], options={"lookalike_count": 0})
    assert not push_env.scene.lookalikes and LOOKALIKE not in push_env.segmentation()
    with pytest.raises(ValueError, match="lookalike_count"):
        push_env.reset(seed=0, options={"lookalike_count": 9})


def test_ood_split_holds_out_colours_shapes_and_has_more_lookalikes():
    train, ood = GROUNDED.split("train"), GROUNDED.split("ood")
    assert not set(train.palette) & set(ood.palette)
    gaps = [np.linalg.norm(np.subtract(a, b)) for a in train.palette.values() for b in ood.palette.values()]
    assert min(gaps) > 0.2
    assert not set(train.shapes) & set(ood.shapes)
    assert ood.lookalikes[0] > train.lookalikes[0] and ood.lookalikes[1] > train.lookalikes[1]
    env = make_env("pick-place", distractors=DistractorConfig(count=3, palette="ood"), variant="grounded")
    try:
        for seed in SEEDS:
            obs, _ = env.reset(seed=seed)
            for obj in env.scene.objects:
                if obj.colour is not None:
                    assert obj.colour in ood.palette
                if obj.role == "distractor":
                    assert obj.shape in ood.shapes
            assert len(env.scene.lookalikes) >= ood.lookalikes[0]
    finally:
        env.close()


def test_custom_palette_mapping_and_counts():
    palette = {"magenta": (1.0, 0.0, 1.0), "lime": (0.5, 1.0, 0.0), "navy": (0.0, 0.0, 0.5), "gold": [0.9, 0.7, 0.1]}
    cfg = DistractorConfig(count=1, palette=palette, shapes=("capsule",), lookalikes=(2, 2))
    assert cfg.split == "custom" and cfg.palette["gold"] == (0.9, 0.7, 0.1)
    env = make_env("push", distractors=cfg, variant="grounded")
    try:
        for seed in SEEDS:
            obs, _ = env.reset(seed=seed)
            scene = env.scene
            assert len(scene.lookalikes) == 2 and scene.split == "custom"
            assert {o.colour for o in scene.objects if o.colour} <= set(palette)
            assert [o.shape for o in scene.distractors] == ["capsule"]
            assert scene.task_object.colour in obs["instruction"].split()
            assert set(obs["instruction"].split()) <= set(all_instruction_words(colours=palette))
    finally:
        env.close()


@pytest.mark.parametrize(
    "palette, match",
    [
        ({}, "non-empty"),
        ({"Red": (1, 0, 0)}, "lower-case"),
        ({"dark red": (0.5, 0, 0)}, "lower-case"),
        ({"red": (1.5, 0, 0)}, r"\[0, 1\]"),
        ({"red": (1, 0)}, "three numbers"),
        ({"red": (float("nan"), 0, 0)}, "three numbers"),
        ({"red": "ff0000"}, "three numbers"),
        ({"red": (1, 0, 0), "scarlet": (1, 0, 0)}, "same RGB"),
    ],
)
def test_bad_palettes_are_refused(palette, match):
    with pytest.raises(ConfigError, match=match):
        DistractorConfig(palette=palette)


def test_bad_counts_and_splits_are_refused():
    with pytest.raises(ConfigError, match="lookalikes"):
        DistractorConfig(lookalikes=(3, 1))
    with pytest.raises(ConfigError, match="lookalikes"):
        DistractorConfig(lookalikes=99)
    with pytest.raises(ConfigError, match="palette"):
        DistractorConfig(palette="sepia")
    with pytest.raises(ConfigError, match="no lookalikes"):
        make_env("push", distractors=DistractorConfig(lookalikes=2), variant="plain")
    with pytest.raises(ConfigError, match="distinct"):  # 2 named parts + 4 lookalikes need 6 colours
        make_env("push", distractors=DistractorConfig(palette={"red": (1, 0, 0), "blue": (0, 0, 1), "green": (0, 1, 0)},
                                                      lookalikes=(1, 4)), variant="grounded")


def test_vocabulary_covers_every_colour_and_grounded_template():
    words = set(all_instruction_words())
    for variant in VARIANTS.values():
        for split in variant.splits.values():
            assert set(split.palette) <= words
    assert PLAIN.grounded is False and GROUNDED.grounded is True


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_names, st.tuples(_unit, _unit, _unit), min_size=1, max_size=6))
def test_valid_palettes_pass_through_unchanged(palette):
    if len(set(palette.values())) < len(palette):  # equal RGB under two names is refused (tested above)
        return
    assert DistractorConfig(palette=palette).palette == {k: tuple(map(float, v)) for k, v in palette.items()}


@settings(max_examples=60, deadline=None)
@given(_names, st.tuples(_unit, _unit, _unit), st.integers(0, 2),
       st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1.0 + 1e-9)))
def test_any_channel_outside_unit_range_is_refused(name, rgb, channel, bad):
    rgb = list(rgb)
    rgb[channel] = bad
    with pytest.raises(ConfigError, match=name):
        DistractorConfig(palette={name: tuple(rgb)})


def test_unnamed_objects_wear_a_colour_no_palette_has():
    from dtp.envs.variants import NEUTRAL_RGB

    every = [c for v in VARIANTS.values() for s in v.splits.values() for c in s.palette.values()]
    assert min(np.linalg.norm(np.subtract(NEUTRAL_RGB, c)) for c in every) > 0.25
    env = make_env("reach", variant="grounded")
    try:
        env.reset(seed=SEEDS[0])
        model = env.sim.model
        np.testing.assert_allclose(model.geom_rgba[model.geom("objGeom").id][:3], NEUTRAL_RGB)
    finally:
        env.close()
    env = make_env("drawer-open", variant="grounded")
    try:
        env.reset(seed=SEEDS[0])
        model = env.sim.model
        np.testing.assert_allclose(model.site_rgba[model.site("goal").id][:3], NEUTRAL_RGB)
    finally:
        env.close()
