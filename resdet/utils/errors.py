"""A marker for errors in what the user gave (a file, a value, a shape), as opposed to a bug.

The tools (resdet/runs/cli.run_tool) print such an error as one line, without a traceback. Most of the
package's user errors predate this marker and are listed by class in resdet/runs/cli.USER_ERRORS; a new
one derives from UserInputError (beside its usual base, e.g. ValueError) so that run_tool knows it
without importing the room that raises it (importing resdet.export would cost every tool ~0.4 s).
"""

__all__ = ["UserInputError"]


class UserInputError(Exception):
    """Base for errors caused by the user's input; the message names the file, key or value."""
