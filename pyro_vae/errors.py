"""Errors a user can cause (bad input) and fix; the CLI prints them as one line, never a traceback."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters: what a one-line error quotes of an
    exception raised by torch, the hub or the user's code (their messages can run to pages)."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]


class PyroVAEError(Exception):
    """Base class of the errors caused by input: a missing file, a wrong option, data that does not fit."""


class DataError(PyroVAEError):
    """The dataset cannot be found or does not fit the chosen likelihood."""


class CheckpointError(PyroVAEError):
    """A checkpoint is missing, unreadable, or cannot be rebuilt."""


class ConfigError(PyroVAEError):
    """An option, a config value or a combination of them that cannot work (the command line exits 2)."""


class ResourceError(PyroVAEError):
    """What was asked for does not fit in the memory or on the disk there is."""


class TrainingError(PyroVAEError):
    """Training cannot go on (e.g. the loss became NaN); the last checkpoint is kept."""


class AgreementError(PyroVAEError):
    """The Pyro ELBO and the hand-written analytic-KL ELBO disagree beyond Monte Carlo noise."""


class RunInUseError(PyroVAEError):
    """Another process is training in the same run folder."""


class RunInterrupted(PyroVAEError):
    """SIGINT or SIGTERM stopped training after a step; a checkpoint was saved to resume from."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
