"""One small exception tree. The CLI maps each branch to an exit code and prints one line.

Raise the most specific class; put in the message what failed, where, and what to do.
"""

from __future__ import annotations


class AwmlDeployError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 3


class ConfigError(AwmlDeployError):
    """The user's configuration or command line is wrong (exit code 2)."""

    exit_code = 2


class UsageError(ConfigError):
    """A command-line usage mistake (exit code 2)."""


class ArtifactError(AwmlDeployError):
    """A checkpoint, ONNX file, engine, bundle or dataset is missing, corrupt or mismatched (exit code 3)."""


class CheckpointError(ArtifactError):
    """A checkpoint cannot be read or does not fit the model."""


class DatasetError(ArtifactError):
    """A dataset (info file, point files, bag) cannot be read or is inconsistent."""


class BackendUnavailableError(AwmlDeployError):
    """A backend was asked for whose runtime is not installed here (exit code 3)."""


class RunnerError(AwmlDeployError, ValueError):
    """A graph runner was called wrongly: inputs that do not fit its graph, or after ``close()`` (exit code 3)."""
