"""The small exception hierarchy for user-facing errors.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; anything that is not an
:class:`MMDetError` is a bug and keeps its traceback.
"""

from __future__ import annotations

#: Process exit codes, documented in the README (the CLI exits with them; the Python API returns them).
EXIT_OK = 0
EXIT_FAILURE = 1  # an error, or (mmdet-run) some files could not be scored
EXIT_USAGE = 2  # the command line is wrong
EXIT_PARITY = 3  # an artefact was written but failed its parity / accuracy gate
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (SIGINT), the shell's 128 + 2


class MMDetError(Exception):
    """Base class of every error caused by input, environment or configuration (not by a bug)."""

    exit_code = EXIT_FAILURE


class UsageError(MMDetError):
    """Contradictory or invalid options; the command line itself is wrong."""

    exit_code = EXIT_USAGE


class MissingDependencyError(MMDetError):
    """An optional dependency (an extra) is not installed."""


class CheckpointError(MMDetError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint needs arbitrary unpickling (it could run code) and was refused."""


class StateDictMismatchError(CheckpointError):
    """Missing keys, unexpected keys or shape mismatches between a checkpoint and the model."""


class ContractError(MMDetError):
    """A model artefact lacks the embedded contract, or its contract is invalid or incompatible."""


class ExportError(MMDetError):
    """Exporting or writing an artefact failed."""


class ParityError(MMDetError):
    """An artefact's outputs differ from the PyTorch reference by more than the tolerance."""

    exit_code = EXIT_PARITY


class BackendError(MMDetError):
    """An inference backend could not be created or run as requested."""


class EngineMismatchError(BackendError):
    """A TensorRT engine was built for another TensorRT version or GPU."""


class Interrupted(MMDetError):
    """The user stopped a run (Ctrl-C); what was finished is on disk and the message says how to go on."""

    exit_code = EXIT_INTERRUPTED


class MediaError(MMDetError):
    """One input file could not be decoded or preprocessed (reported per file, the run continues)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An error message as one line for a results row, a log line or a report: whitespace (newlines
    included) collapsed, cut to ``limit`` characters (``...`` marks the cut).

    For an :class:`OSError` with a ``strerror`` that text is used, without the path the message repeats
    (the row or the message around it names the file); an exception without a message gives its type name.
    """
    if isinstance(error, BaseException):
        text = " ".join(str(getattr(error, "strerror", None) or error).split()) or type(error).__name__
    else:
        text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."
