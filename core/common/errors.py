"""One exception type for problems the user can fix (bad input), so callers can
show a one-line message instead of a traceback."""

from core.common.text import collapse_whitespace


class InputError(Exception):
    """Bad input: the message names the file, row and column where it can."""


def one_line(text: object) -> str:
    """Collapse any whitespace (newlines from wrapped exceptions too) so a message
    stays the single line the CLI and the app promise."""
    return collapse_whitespace(text)


class NotFound(InputError):
    """What the input names does not exist (a product id, a model version, a job): the
    HTTP API answers 404 instead of 400."""
