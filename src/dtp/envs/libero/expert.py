"""Privileged scripted pick-and-place expert for LIBERO: reads the BDDL goal and object poses from the sim.

It needs only the underlying robosuite env (``OffScreenRenderEnv.env``) and its observation dict, so it
plugs into any LIBERO wrapper. Actions are LIBERO's 7-dim OSC deltas (dx,dy,dz,droll,dpitch,dyaw in
[-1, 1]; gripper -1 open, +1 close). The grasp is planned from the object's collision geoms: the fingers
go to the height band just below the object's top (or just above the table for flat objects), and the
gripper turns about the vertical so that the fingers close across the narrowest horizontal extent of that
band, centred on it (an off-centre grasp when the band's footprint is not centred on the object's origin).
"""

from __future__ import annotations

import numpy as np

GAIN = 12.0
ROT_GAIN = 2.0
HOVER = 0.10  # fingertips above the object's top before the descent
LIFT = 0.25  # carry height above the target's origin (world frame, table top at z=0)
TIP = 0.005  # the fingertips' lowest point below the grip site
DEPTH = 0.035  # how far below the object's top the fingertips go
CLEAR = 0.006  # fingertips above the object's bottom (the table)
BAND = 0.025  # height of the finger pads' contact band
OPEN_WIDTH = 0.075  # widest band the open fingers can straddle
HAND_U, HAND_V, HAND_Z = 0.11, 0.04, 0.024  # hand half-extents along/across the closing axis, bottom above grip
FINGER_U, FINGER_V = 0.07, 0.015  # open fingers' half-extents along/across the closing axis
HELD_XY, HELD_Z = 0.06, 0.20  # an object within this of the grip site (horizontally, below it) is in hand
RECOVER_AFTER = 5  # steps out of hand before a recovering expert starts over


def goal_pick_place(robosuite_env) -> tuple[str, str]:
    """The (object, target object) of the first ``(In obj region)``/``(On obj region)`` goal predicate."""
    for pred in robosuite_env.parsed_problem["goal_state"]:
        if pred[0].lower() in ("in", "on") and len(pred) == 3:
            obj, region = pred[1], pred[2]
            target = next(
                (n for n in robosuite_env.obj_body_id if region.startswith(n + "_")),
                region,
            )
            return obj, target
    raise ValueError(f"no pick-and-place goal in {robosuite_env.parsed_problem['goal_state']}")


def quat_to_mat(q_xyzw) -> np.ndarray:
    """Rotation matrix of an ``xyzw`` quaternion (robosuite's observation convention)."""
    x, y, z, w = np.asarray(q_xyzw, dtype=float) / np.linalg.norm(q_xyzw)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rot_error(r_des: np.ndarray, r_cur: np.ndarray) -> np.ndarray:
    """World-frame axis-angle vector that turns ``r_cur`` into ``r_des`` (OSC's delta convention)."""
    e = r_des @ r_cur.T
    angle = np.arccos(np.clip((np.trace(e) - 1) / 2, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([e[2, 1] - e[1, 2], e[0, 2] - e[2, 0], e[1, 0] - e[0, 1]])
    n = np.linalg.norm(axis)
    if n < 1e-6:  # a half turn: any axis of the symmetric part
        w, v = np.linalg.eigh((e + np.eye(3)) / 2)
        axis, n = v[:, -1], 1.0
    return axis / n * angle


def _body_points(robosuite_env, roots, n=5) -> np.ndarray:
    """World points (G x n^3 x 3) on a grid through the bounding box of every collision geom under ``roots``."""
    m = robosuite_env.sim.model._model
    d = robosuite_env.sim.data
    grid = np.array(list(np.ndindex(n, n, n))) / (n - 1) * 2 - 1
    out = []
    for g in range(m.ngeom):
        b = m.geom_bodyid[g]
        while b != 0 and b not in roots:
            b = m.body_parentid[b]
        if b == 0 or not (m.geom_contype[g] or m.geom_conaffinity[g]):
            continue
        aabb = m.geom_aabb[g]
        local = aabb[:3] + grid * aabb[3:]
        out.append(d.geom_xpos[g] + local @ d.geom_xmat[g].reshape(3, 3).T)
    return np.stack(out) if out else np.zeros((0, n ** 3, 3))


def scene_points(robosuite_env, obj: str) -> tuple[np.ndarray, np.ndarray]:
    """Points on the object's collision geoms (G x K x 3), and on every other object's (N x 3)."""
    ids = robosuite_env.obj_body_id
    others = _body_points(robosuite_env, {i for n, i in ids.items() if n != obj})
    return _body_points(robosuite_env, {ids[obj]}), others.reshape(-1, 3)


def _clearance(pts, centre, u, v, half_u, half_v):
    """Least distance from the points (N x 2) to outside a centred rectangle along (u, v); +inf if none."""
    if len(pts) == 0:
        return np.inf
    rel = pts - centre
    return float(np.max([np.abs(rel @ u) - half_u, np.abs(rel @ v) - half_v], axis=0).min())


def grasp_plan(obj_geoms: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(xy centre, closing-axis angle in radians, fingertip height) of a collision-free grasp.

    The fingertips go DEPTH below the object's top (not below CLEAR above its bottom); the closing axis
    is the narrowest direction of the geoms in the fingers' band, unless the hand (wide along the closing
    axis) would hit a neighbour: then the axis turns and the grasp slides along the object to clear it.
    """
    pts = obj_geoms.reshape(-1, 3)
    top, bottom = pts[:, 2].max(), pts[:, 2].min()
    tip = max(bottom + CLEAR, top - DEPTH)
    hit = [c for c in obj_geoms if c[:, 2].max() > tip and c[:, 2].min() < tip + BAND]
    xy = np.concatenate(hit if hit else list(obj_geoms))[:, :2]
    hand_obs = others[others[:, 2] > tip + TIP + HAND_Z - 0.01][:, :2]
    finger_obs = others[others[:, 2] > tip - 0.005][:, :2]
    best = None
    for theta in np.radians(np.arange(0, 180, 5)):
        u = np.array([np.cos(theta), np.sin(theta)])
        v = np.array([-u[1], u[0]])
        pu, pv = xy @ u, xy @ v
        width = pu.max() - pu.min()
        span = max(0.0, (pv.max() - pv.min()) / 2 - 0.012)
        for s in np.linspace(-span, span, 2 * int(span / 0.01) + 1):
            centre = u * (pu.max() + pu.min()) / 2 + v * ((pv.max() + pv.min()) / 2 + s)
            clear = min(_clearance(hand_obs, centre, u, v, HAND_U, HAND_V),
                        _clearance(finger_obs, centre, u, v, FINGER_U, FINGER_V))
            ok = width <= OPEN_WIDTH and clear > 0.005
            score = (not ok, width + 0.3 * abs(s) if ok else -clear)
            if best is None or score < best[0]:
                best = (score, centre, theta)
    return best[1], best[2], tip


def desired_rotation(theta: float, r_cur: np.ndarray) -> np.ndarray:
    """Hand rotation pointing down with its closing axis (local y) along ``theta``, the turn nearest ``r_cur``."""
    u = np.array([np.cos(theta), np.sin(theta), 0.0])
    if u @ r_cur[:, 1] < 0:
        u = -u
    z = np.array([0.0, 0.0, -1.0])
    return np.stack([np.cross(u, z), u, z], axis=1)


class PickPlaceExpert:
    """Phase machine: turn and go above the grasp, descend, grasp, lift, above target, lower, release.

    recover=True (for labelling states another policy reached, DAgger): while lifting, carrying or
    lowering, an object that is not between the fingers for RECOVER_AFTER steps sends the machine back
    to the approach, so the labels say "go and grasp it again", not "carry nothing to the basket".
    Off (the default) the machine is the one that recorded the demonstrations.
    """

    def __init__(self, robosuite_env, recover: bool = False):
        self.env = robosuite_env
        self.recover = recover
        self.lost = 0  # consecutive steps with the object out of hand while it should be held
        self.obj, self.target = goal_pick_place(robosuite_env)
        self.phase = "above"
        self.count = 0
        self.last_z = None
        self.stall = 0
        self.r_hold = None
        self.hang = 0.0  # grip site above the held object's bottom
        self.clear_z = 0.0  # highest top of the other objects (target included)
        self.target_top = 0.0

    def _plan(self, obj_pos):
        """Grasp offset from the object's origin, closing angle and fingertip height, from the sim now."""
        geoms, others = scene_points(self.env, self.obj)
        centre, theta, tip = grasp_plan(geoms, others)
        self.hang = tip + TIP - geoms[..., 2].min()
        self.clear_z = others[:, 2].max() if len(others) else 0.0
        target = _body_points(self.env, {self.env.obj_body_id[self.target]})
        self.target_top = target[..., 2].max() if target.size else 0.0
        return np.r_[centre - obj_pos[:2], 0.0], theta, tip

    def _move(self, eef, goal, grip, rot):
        limit = 0.5 if grip > 0 else 1.0  # carry slowly so a loose grasp holds
        delta = np.clip(GAIN * (np.asarray(goal) - eef), -limit, limit)
        return np.concatenate([delta, np.clip(ROT_GAIN * rot, -0.5, 0.5), [grip]])

    def act(self, obs: dict) -> np.ndarray:
        """The next action from an observation dict with ``robot0_eef_pos/quat`` and ``<obj>_pos`` keys."""
        eef = np.asarray(obs["robot0_eef_pos"])
        r_cur = quat_to_mat(obs["robot0_eef_quat"])
        obj = np.asarray(obs[f"{self.obj}_pos"])
        tgt = np.asarray(obs[f"{self.target}_pos"])
        self.count += 1
        # carry high enough that the hanging object clears every other object, and lower it into the target
        lift_z = max(tgt[2] + LIFT, self.clear_z + self.hang + 0.03)
        lower_z = max(tgt[2] + 0.15, self.target_top - 0.06 + self.hang)
        if self.recover:
            self._recover_if_dropped(eef, obj)
        p = self.phase
        if p in ("above", "descend"):
            offset, theta, tip = self._plan(obj)
            self.r_hold = desired_rotation(theta, r_cur)
            grasp = obj + offset
            grasp[2] = tip + TIP
        rot = rot_error(self.r_hold, r_cur) if self.r_hold is not None else np.zeros(3)
        if p == "above":
            goal, grip = grasp + [0, 0, HOVER + DEPTH], -1.0
            if np.linalg.norm(goal - eef) < 0.01 and np.linalg.norm(rot) < 0.05:
                self.phase = "descend"
        elif p == "descend":
            goal, grip = grasp, -1.0
            # something below the fingers stops the descent: grasp once it stalls
            moving = self.last_z is None or self.last_z - eef[2] > 0.0005
            self.stall = 0 if moving else self.stall + 1
            self.last_z = eef[2]
            if abs(goal[2] - eef[2]) < 0.004 or self.stall > 5:
                self.phase, self.count = "grasp", 0
            return self._descend(eef, goal, rot)
        elif p == "grasp":
            goal, grip = eef, 1.0
            if self.count > 15:
                self.phase = "lift"
        elif p == "lift":
            goal, grip = np.array([eef[0], eef[1], lift_z]), 1.0
            if abs(lift_z - eef[2]) < 0.02:
                self.phase = "carry"
        elif p == "carry":
            goal, grip = np.array([tgt[0], tgt[1], lift_z]), 1.0
            if np.linalg.norm(goal[:2] - eef[:2]) < 0.01:
                self.phase, self.count = "lower", 0
        elif p == "lower":
            goal, grip = np.array([tgt[0], tgt[1], lower_z]), 1.0
            if abs(goal[2] - eef[2]) < 0.02 or self.count > 60:
                self.phase, self.count = "release", 0
        else:
            goal, grip = eef, -1.0
        return self._move(eef, goal, grip, rot)

    def _recover_if_dropped(self, eef, obj) -> None:
        """Back to the approach when the object has not been in hand for RECOVER_AFTER steps of a carry."""
        in_hand = np.linalg.norm(obj[:2] - eef[:2]) < HELD_XY and -0.02 < eef[2] - obj[2] < HELD_Z
        self.lost = 0 if (in_hand or self.phase not in ("lift", "carry", "lower")) else self.lost + 1
        if self.lost > RECOVER_AFTER:
            self.phase, self.count, self.stall, self.last_z, self.r_hold, self.lost = "above", 0, 0, None, None, 0

    def _descend(self, eef, goal, rot):
        """Descend at a steady speed (a P-controller's slow tail would read as a stall), xy held on the grasp."""
        a = self._move(eef, goal, -1.0, rot)
        a[2] = -np.clip(GAIN * (eef[2] - goal[2]), 0.3, 1.0)
        return a
