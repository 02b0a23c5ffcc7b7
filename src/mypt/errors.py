"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single `mypt: error: ...` line and a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class MyptError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""


def json_error_text(e, one_line: bool = False) -> str:
    """Where a `json.JSONDecodeError` happened, said once: Python's messages that end in "at"
    ("Invalid control character at") are followed by the place. `one_line`: the text is a single
    line (a JSONL record), so only the column is said."""
    where = f"column {e.colno}" if one_line else f"line {e.lineno} column {e.colno}"
    return f"{e.msg.removesuffix(' at')} at {where}"
