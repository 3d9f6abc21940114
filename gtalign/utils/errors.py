"""Errors caused by what the person running a command gave it (a config value, a data file).

The command-line entry points print an `InputError` as one line, `error: ...`, and exit with
status 2 (a usage error), instead of a traceback; anything else is a bug and keeps its traceback.
Both subclasses also derive from the builtin a caller would catch (ValueError, FileNotFoundError).
"""

from __future__ import annotations


class InputError(Exception):
  """Bad input from the user; the message names the key or file and what was expected."""


class InvalidInput(InputError, ValueError):
  """A config value or file content that cannot work."""


class MissingInput(InputError, FileNotFoundError):
  """A file or directory the config points at does not exist."""
