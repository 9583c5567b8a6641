"""Errors that are the user's to fix: the command line prints them as one line and exits with 2."""


class UserError(Exception):
    """Bad input, a missing file, a wrong option: a clear one-line message, never a traceback."""


class DataError(UserError):
    """A data file is missing, empty, malformed or inconsistent."""
