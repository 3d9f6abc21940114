"""What every command-line entry point does with bad input: one line `error: ...`, exit status 2.

`run(main)` replaces `absl.app.run(main)`. Flag parsing errors (an unknown flag, a value of the
wrong type), `app.UsageError` and any `InputError` (a config value, a file, a data row that the
user gave) are printed as one line naming what was wrong, with exit status 2, the status of a
usage error. Anything else is a bug in gtalign and keeps its traceback. `--debug` shows the
traceback of an input error too.
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from absl import app, flags

from gtalign.utils.errors import InputError

_DEBUG = flags.DEFINE_bool("debug", False,
                           "Show the traceback of an input error instead of one 'error:' line.")


def error_line(message: object) -> str:
  """`error: message` on one line (its whitespace collapsed)."""
  return f"error: {' '.join(str(message).split()) or type(message).__name__}"


def fail(message: object) -> NoReturn:
  """Prints `error: message` (on one line) to stderr and exits with status 2."""
  print(error_line(message), file=sys.stderr, flush=True)
  sys.exit(2)


def debug_requested(argv: list[str]) -> bool:
  """Whether --debug is on the command line (readable before the flags are parsed)."""
  return any(a in ("--debug", "--debug=true", "--debug=True", "--debug=1") for a in argv)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its errors as one `error:` line instead of `FATAL ...`."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --helpshort)")


def run(main: Callable[[list[str]], object]) -> None:
  """`app.run(main)` with input errors printed as one line and exit status 2."""

  def guarded(argv):
    try:
      return main(argv)
    except (InputError, app.UsageError) as e:
      if _DEBUG.value:
        raise
      fail(e)

  app.run(guarded, flags_parser=parse_flags)
