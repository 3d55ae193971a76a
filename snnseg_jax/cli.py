"""Command-line plumbing shared by `train.py`, `evaluate.py` and the benchmark: flags, user errors.

Mistakes in the input (a misspelt override, a missing config file, an unknown dataset, a bad
value) end the program with one paragraph on stderr and exit status 2, never a traceback. Library
code signals them by raising `UserError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Callable, NoReturn, Sequence

from absl import flags

from snnseg_jax import formulations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the command line, the config or the data, explained in its message."""


def fail(message: str) -> NoReturn:
    """Prints `message` as one paragraph on stderr and exits with `EXIT_USER_ERROR`."""
    print(_paragraph(f"error: {message}"), file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def warn(message: str) -> None:
    """Prints `message` as one paragraph on stderr; the program goes on."""
    print(_paragraph(f"warning: {message}"), file=sys.stderr)


def _paragraph(text: str) -> str:
    """`text` filled to 100 columns; lines after it that begin with 4 spaces (commands to paste) stay whole."""
    text, *commands = text.split("\n    ")
    return "\n".join([textwrap.fill(" ".join(text.split()), width=100, break_long_words=False,
                                     break_on_hyphens=False),  # paths stay whole
                       *(f"    {' '.join(command.split())}" for command in commands)])


def _config_file(argv: Sequence[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return "?"


def explain_flag_error(error: Exception, argv: Sequence[str]) -> str:
    """One-paragraph explanation of an error raised while parsing `argv` into flags."""
    if isinstance(error, AttributeError) and error.args and isinstance(error.args[0], KeyError):
        # ml_collections: an override names a field that the locked config does not have.
        detail = " ".join(str(error.args[0].args[0]).split())  # "'nme' Did you mean "name" ...?"
        field = detail.split()[0].strip("'")
        overrides = [a for a in argv if a.startswith("--config.") and f".{field}" in a.split("=")[0]]
        return (f"unknown config field {field!r} in {' '.join(overrides) or 'an override'}. "
                f"{detail.split(' ', 1)[1] if ' ' in detail else ''} Overrides must name fields "
                f"that exist in the config file.")
    if isinstance(error, OSError):
        reason = str(error).strip().splitlines()[-1].strip()
        return f"could not load the config file {_config_file(argv)!r}: {reason}"
    if isinstance(error, flags.Error):
        return f"bad command line: {error}. Run with --helpfull for the flags."
    raise error


def run(main: Callable[[], None], argv: Sequence[str] | None = None) -> None:
    """Parses the flags in `argv` (default `sys.argv`), then runs `main`, reporting user errors."""
    argv = list(sys.argv if argv is None else argv)
    try:
        extra = flags.FLAGS(argv)[1:]
    except (flags.Error, AttributeError, OSError) as error:
        fail(explain_flag_error(error, argv))
    if extra:
        fail(f"unexpected arguments {' '.join(extra)}; options take the form --name=value")
    formulations.keep_freed_memory()
    try:
        main()
    except UserError as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to resume from the newest checkpoint")
