"""Command-line plumbing shared by `train.py`, `evaluate.py` and the benchmark: flags, user errors, exit statuses.

Mistakes in the input (a misspelt override, a missing or broken config file, an unknown dataset, a
bad value, a workdir that cannot be used, a full disk) end the program with one paragraph on
stderr and exit status 2, never a traceback. Library code signals them by raising `UserError`;
`run` also explains the `OSError`s that name a file. Anything else is a bug and keeps its
traceback. Training stopped by a signal (`Stopped`) ends with exit status 75, so that a job script
can tell a run to requeue from one that failed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import ml_collections
from absl import flags

from snnseg_jax import formulations

EXIT_USER_ERROR = 2
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL: stopped by a signal, state saved; run the same command again
EXIT_INTERRUPTED = 130  # Ctrl-C where there is nothing to save (evaluation, benchmark): as the shell reports it


class UserError(Exception):
    """A mistake in the command line, the config, the data or the files, explained in its message."""


class Stopped(Exception):
    """Training stopped on request (a signal); the message says what was saved and how to go on."""


def fail(message: str, status: int = EXIT_USER_ERROR, prefix: str = "error") -> NoReturn:
    """Prints `message` as one paragraph on stderr and exits with `status`."""
    print(_paragraph(f"{prefix}: ", message), file=sys.stderr)
    sys.exit(status)


def warn(message: str) -> None:
    """Prints `message` as one paragraph on stderr; the program goes on."""
    print(_paragraph("warning: ", message), file=sys.stderr)


def _paragraph(label: str, text: str) -> str:
    """`label` then `text` filled to 100 columns, the label on the first line whatever follows it; lines
    after it that begin with 4 spaces (commands to paste) stay whole."""
    text, *commands = text.split("\n    ")
    return "\n".join(
        [
            textwrap.fill(
                " ".join(text.split()),
                width=100,
                initial_indent=label,
                break_long_words=False,
                break_on_hyphens=False,
            ),  # paths stay whole
            *(f"    {' '.join(command.split())}" for command in commands),
        ]
    )


def _config_file(argv: Sequence[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return "?"


def explain_flag_error(error: Exception, argv: Sequence[str]) -> str:
    """One-paragraph explanation of an error raised while parsing `argv` into flags and loading the config."""
    config_file = _config_file(argv)
    missing = error.args[0] if isinstance(error, AttributeError) and error.args else error
    if isinstance(missing, KeyError):  # ml_collections: an override names a field the locked config lacks
        return _unknown_field(missing, argv)
    if isinstance(error, OSError):
        reason = str(error).strip().splitlines()[-1].strip()
        return f"could not load the config file {config_file!r}: {reason}"
    if isinstance(error, flags.Error) and "Error whilst parsing config file" in str(error):
        return _raised_in_config(str(error), config_file)  # ml_collections re-raises with the traceback as text
    if isinstance(error, flags.Error):
        return f"bad command line: {error}. Run with --helpfull for the flags."
    if isinstance(error, SyntaxError) and _same_file(error.filename, config_file):
        return f"the config file {config_file!r} has a syntax error at line {error.lineno}: {error.msg}"
    line = _line_in(error, config_file)
    if line is not None:
        return f"the config file {config_file!r} raised {type(error).__name__} at line {line}: {error}"
    if isinstance(error, AttributeError) and "get_config" in str(error):
        return f"the config file {config_file!r} has no get_config() function returning the config"
    raise error


def _raised_in_config(text: str, config_file: str) -> str:
    lines = [frame for frame in re.findall(r'File "([^"]+)", line (\d+)', text) if _same_file(frame[0], config_file)]
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    where = f" at line {lines[-1][1]}" if lines else ""
    return f"the config file {config_file!r} raised{where}: {last}"


def _check_config_loaded() -> None:
    """Raises the error that kept the `--config` file from loading (ml_collections defers some until
    the config is first used)."""
    if "config" in flags.FLAGS and not isinstance(flags.FLAGS["config"].value, (ml_collections.ConfigDict, type(None))):
        flags.FLAGS["config"].value.lock()  # a config that failed to load raises its error here


def _unknown_field(error: KeyError, argv: Sequence[str]) -> str:
    detail = " ".join(str(error.args[0] if error.args else error).split())
    named = re.match(r"'([^']+)'\s*(.*)", detail)  # "'nme' Did you mean "name" instead of "nme"?"
    if not named:
        return f"bad config override: {detail}."
    field, hint = named.groups()
    overrides = [a for a in argv if a.startswith("--config.") and f".{field}" in a.split("=")[0]]
    return (
        f"unknown config field {field!r} in {' '.join(overrides) or 'an override'}. {hint} Overrides "
        f"must name fields that exist in the config file."
    )


def _same_file(a: str | None, b: str) -> bool:
    return bool(a) and os.path.abspath(a) == os.path.abspath(b)


def _line_in(error: BaseException, path: str) -> int | None:
    """The line of `path` (the config file) where `error` was raised, if it was raised there."""
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if _same_file(frame.filename, path)]
    return lines[-1] if lines else None


_OS_ADVICE = {
    errno.ENOSPC: "no space left on its device: free some space or use a --workdir elsewhere, then run the "
    "same command again",
    errno.EDQUOT: "the disk quota is exceeded: free some space or use a --workdir elsewhere, then run the "
    "same command again",
    errno.EACCES: "permission denied: choose a path you can write to, or change its permissions",
    errno.EPERM: "operation not permitted: choose a path you can write to, or change its permissions",
    errno.EROFS: "it is on a read-only file system: choose a path elsewhere",
    errno.EEXIST: "it exists and is not a directory: choose another path, or move that file away",
    errno.ENOTDIR: "part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "it is a directory where a file was expected",
    errno.ENOENT: "it is missing, or a directory on its path is",
}


def explain_os_error(error: OSError) -> str:
    """What failed with a file or directory and what to do, from an `OSError` that names its path."""
    paths = " -> ".join(repr(os.fspath(p)) for p in (error.filename, error.filename2) if p is not None)
    advice = _OS_ADVICE.get(error.errno, error.strerror or str(error))
    return f"could not use {paths or 'a file'}: {advice} ({error.strerror or error})"


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
    """Adds `path` to an `OSError` raised without one inside (a failed write or flush names no file)."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = path
        raise


def run(main: Callable[[], None], argv: Sequence[str] | None = None) -> None:
    """Parses the flags in `argv` (default `sys.argv`), then runs `main`, reporting user errors."""
    argv = list(sys.argv if argv is None else argv)
    try:
        extra = flags.FLAGS(argv)[1:]
        _check_config_loaded()
    except Exception as error:  # parsing reads only the command line and the config file
        fail(explain_flag_error(error, argv))
    if extra:
        fail(f"unexpected arguments {' '.join(extra)}; options take the form --name=value")
    formulations.keep_freed_memory()
    formulations.deterministic_gpu_ops()
    try:
        main()
    except UserError as error:
        fail(str(error))
    except Stopped as error:
        fail(str(error), EXIT_STOPPED, prefix="stopped")
    except KeyboardInterrupt:
        fail("stopped before the end; nothing more was written", EXIT_INTERRUPTED, prefix="interrupted")
    except OSError as error:
        if error.filename is None and error.errno not in _OS_ADVICE:  # not about a file: keep the traceback
            raise
        fail(explain_os_error(error))
