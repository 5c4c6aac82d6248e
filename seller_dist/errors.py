"""Errors the user can fix, and how the CLI words them: raise a `UserError` (or a subclass) for a
mistake in what the user gave (a config key, an input file, an output that must not be overwritten);
`seller-dist` prints `seller-dist <command>: error: <message>` on ONE line and exits 2 (`--debug` or
SELLER_DEBUG=1: the traceback instead). Anything else is a bug: it keeps its traceback and a non-2 exit.
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


class ConfigError(UserError, ValueError):  # also a ValueError: code that catches ValueError still works
    """A config the user must change; the message names the key (seller_dist.config)."""


def user_error_of(e: BaseException) -> BaseException | None:
    """The user error behind `e`, or None when `e` is a bug (or anything else unexpected); for a
    worker's exception that Ray re-raised in the driver (a RayTaskError, whose text holds the remote
    traceback), the worker's own exception, `.cause`."""
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
