"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message says what to do next."""


class DefinitionError(UserError):
    """A converter definition is malformed."""
