"""The one error type of the serve stage: its message is a single line fit for a terminal."""


class ServerError(RuntimeError):
    """Triton could not be set up, started, reached or stopped."""
