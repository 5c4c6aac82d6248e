"""Errors the user can fix, and how the CLI words them.

Raise a `UserError` (or a subclass) for a mistake in what the user gave: a config key, an input file,
an output that must not be overwritten. `seller-dist` prints its message on ONE line,
`seller-dist <command>: error: <message>`, and exits 2; `--debug` or SELLER_DEBUG=1 shows the
traceback instead. Anything else is a bug: it keeps its traceback and a non-2 exit.

Existing error classes keep their old base too (e.g. `ConfigError(UserError, ValueError)`), so code
and tests that catch the old base still work.
"""

from __future__ import annotations

# OS errors the CLI words like a UserError: a path the user gave that is missing or unreadable.
OS_USER_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class UserError(Exception):
    """An error the user can fix; the CLI prints its message on one line and exits 2."""


class ConfigError(UserError, ValueError):
    """A config the user must change; the message names the key (seller_dist.config)."""


def user_error_of(e: BaseException) -> BaseException | None:
    """The user error behind `e`, or None when `e` is a bug (or anything else unexpected).

    Ray re-raises a worker's exception in the driver as a RayTaskError that is also an instance of
    the worker's exception class; its text holds the remote traceback, so the worker's own
    exception (`.cause`) is the one to word.
    """
    expected = (UserError, *OS_USER_ERRORS)
    cause = getattr(e, "cause", None)
    if cause is not e and isinstance(cause, expected):
        return cause
    return e if isinstance(e, expected) else None


def one_line_message(e: BaseException) -> str:
    """The error's message on one line (newlines and the indentation after them collapsed)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"  # not "[Errno 2] No such file or directory: '...'"
    else:
        text = str(e)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(e).__name__
