"""User-facing errors.

Every error a user can cause (bad config, missing data, corrupt artifact) is a
``LearngeneError``: the CLI prints its message on one line and exits with status 2
instead of showing a traceback. Messages name the problem *and* the fix.
"""

from __future__ import annotations


class LearngeneError(Exception):
    """Base class for errors caused by user input; the message is meant for humans."""


class ConfigError(LearngeneError, ValueError):
    """A config value, shape or argument is invalid."""


class DatasetNotFoundError(LearngeneError, FileNotFoundError):
    """A dataset is not installed; the message names the command that installs it."""


class ArtifactError(LearngeneError):
    """A learngene artifact or checkpoint is missing, corrupt or inconsistent."""


class UnknownMethodError(LearngeneError, KeyError):
    """A method name is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TrainingDivergedError(LearngeneError, ArithmeticError):
    """The training loss (or the weights) became NaN or infinite; the last good checkpoint is kept."""


class DistributedError(LearngeneError, RuntimeError):
    """Another process of a data-parallel run died or stopped answering; resume from the checkpoint."""
