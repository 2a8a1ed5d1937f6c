"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message says what to do next."""


class DefinitionError(UserError):
    """A converter definition is malformed."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (DuckDB's carry hints and context below it)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
