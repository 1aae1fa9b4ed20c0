"""Errors that report a user mistake in one line, without a traceback."""

__all__ = ["PpgenError", "SpecError", "DataError", "TrainingError", "TrainingInterrupted", "SamplingInterrupted"]


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


class SamplingInterrupted(KeyboardInterrupt):
    """MCMC was stopped by Ctrl-C; the message says what was drawn. ``draws``: the complete chains, or else the
    chains stopped, cut to equally many draws (None before the first draw); ``partial``: the chains stopped short of
    the complete ones (sequential chains: one; chains in worker processes: cut to equally many draws), or None."""

    def __init__(self, message: str, draws=None, partial=None):
        super().__init__(message)
        self.draws, self.partial = draws, partial
