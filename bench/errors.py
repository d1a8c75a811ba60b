"""What a bench section (or one paired ratio) may fail with and still let the run go on."""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

# RuntimeError covers ours: LoadError, ServerError, InprocessError, PerfAnalyzerError,
# FastAPIServerError, PipelineError.
MEASUREMENT_ERRORS = (InferenceServerException, RuntimeError, OSError, ValueError)


def first_line(e: BaseException) -> str:
    """The error's first line for a log or results.json (its type when it says nothing)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
