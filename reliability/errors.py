"""The one error type of this package: its message is a single line fit for a terminal."""


class ReliabilityError(RuntimeError):
    """A check that cannot run: no deployment to test, a server that does not start, ..."""
