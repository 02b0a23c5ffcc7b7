"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single `mypt: error: ...` line and a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class MyptError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""
