"""Errors that report a user mistake in one line, without a traceback."""

__all__ = ["PpgenError", "SpecError", "DataError", "TrainingError", "TrainingInterrupted"]


class PpgenError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""


class SpecError(PpgenError):
    """A spec key or value is wrong; the message names the dotted key."""


class DataError(PpgenError):
    """A data file is missing, corrupt or of the wrong shape; the message names the file."""


class TrainingError(PpgenError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step."""


class TrainingInterrupted(TrainingError):
    """Training was interrupted (Ctrl-C); the message says where the checkpoint is."""
