"""Errors raised by `dtp.envs`, kept in a light module so callers can catch them cheaply."""

from __future__ import annotations

from dtp.errors import ConfigError, DTPError, did_you_mean


class UnknownTaskError(ConfigError):
    """A task name that `dtp.envs.TASKS` does not know; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown task {name!r}{did_you_mean(name, self.known)}; known tasks: {', '.join(self.known)}")


class RenderBackendError(DTPError, RuntimeError):
    """No working OpenGL backend for MuJoCo's offscreen renderer."""
