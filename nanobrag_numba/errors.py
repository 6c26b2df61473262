"""The one exception type that the command line turns into a one-line error.

Every problem with the user's input (a missing file, a malformed line, an
impossible value) is raised as :class:`NanoBraggError` with a message that
names the problem; ``cli.main`` prints it as ``nanobrag-numba: error: ...``
and exits with status 2, never with a traceback.
"""


class NanoBraggError(Exception):
    """A problem with the user's input or environment, worded for the user."""
