"""Errors a user can fix: the CLI prints their message, without a traceback, and exits with status 2."""


class InstdivError(Exception):
    pass


class ConfigError(InstdivError):
    """A wrong or impossible parameter; the message names the key and the fix."""


class DataError(InstdivError):
    """A missing, corrupt or stale data file; the message names the file and the fix."""


def friendly(fn):
    """For CLI commands: a user error prints one line naming the parameter or file and the fix, and exits 2."""
    import functools

    import typer

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InstdivError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper
