"""Errors a user can fix: the CLI prints their message, without a traceback, and exits with status 2."""


class InstdivError(Exception):
    pass


class ConfigError(InstdivError):
    """A wrong or impossible parameter; the message names the key and the fix."""


class DataError(InstdivError):
    """A missing, corrupt or stale data file; the message names the file and the fix."""
