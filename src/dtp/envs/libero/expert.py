"""Privileged scripted pick-and-place expert for LIBERO: reads the BDDL goal and object poses from the sim.

It needs only the underlying robosuite env (``OffScreenRenderEnv.env``) and its observation dict, so it
plugs into any LIBERO wrapper. Actions are LIBERO's 7-dim OSC deltas (dx,dy,dz,droll,dpitch,dyaw in
[-1, 1]; gripper -1 open, +1 close).
"""

from __future__ import annotations

import numpy as np

GAIN = 12.0
HOVER = 0.12
LIFT = 0.25  # carry height above the target's origin (obs positions are in the robot-base frame)


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


class PickPlaceExpert:
    """Phase machine: above object, descend, grasp, lift, above target, descend, release."""

    def __init__(self, robosuite_env):
        self.obj, self.target = goal_pick_place(robosuite_env)
        self.phase = "above"
        self.count = 0
        self.last_z = None
        self.stall = 0

    def _move(self, eef, goal, grip):
        limit = 0.5 if grip > 0 else 1.0  # carry slowly so a loose grasp holds
        delta = np.clip(GAIN * (np.asarray(goal) - eef), -limit, limit)
        return np.concatenate([delta, np.zeros(3), [grip]])

    def act(self, obs: dict) -> np.ndarray:
        """The next action from an observation dict with ``robot0_eef_pos`` and ``<obj>_pos`` keys."""
        eef = np.asarray(obs["robot0_eef_pos"])
        obj = np.asarray(obs[f"{self.obj}_pos"])
        tgt = np.asarray(obs[f"{self.target}_pos"])
        self.count += 1
        lift_z = tgt[2] + LIFT
        p = self.phase
        if p == "above":
            goal, grip = obj + [0, 0, HOVER], -1.0
            if np.linalg.norm(goal - eef) < 0.01:
                self.phase = "descend"
        elif p == "descend":
            goal, grip = obj + [0, 0, 0.01], -1.0
            # tall objects stop the fingers above the goal: grasp once the descent stalls
            moving = self.last_z is None or self.last_z - eef[2] > 0.001
            self.stall = 0 if moving else self.stall + 1
            self.last_z = eef[2]
            if np.linalg.norm(goal - eef) < 0.01 or self.stall > 5:
                self.phase, self.count = "grasp", 0
        elif p == "grasp":
            goal, grip = eef, 1.0
            if self.count > 20:
                self.phase = "lift"
        elif p == "lift":
            goal, grip = np.array([eef[0], eef[1], lift_z]), 1.0
            if abs(lift_z - eef[2]) < 0.02:
                self.phase = "carry"
        elif p == "carry":
            goal, grip = np.array([tgt[0], tgt[1], lift_z]), 1.0
            if np.linalg.norm(goal[:2] - eef[:2]) < 0.01:
                self.phase = "lower"
        elif p == "lower":
            goal, grip = np.array([tgt[0], tgt[1], tgt[2] + 0.15]), 1.0
            if abs(goal[2] - eef[2]) < 0.02:
                self.phase, self.count = "release", 0
        else:
            goal, grip = eef, -1.0
        return self._move(eef, goal, grip)
