"""Triton Python model `<name>_preprocess`: encoded image bytes -> the classifier's input.

Input `image` (BYTES, one encoded image per batch item); output named per `model_spec.json`
(beside config.pbtxt), [C, H, W] of the spec's dtype, made by `contract.model_input`, the
very code the client uses and training normalises (uint8 pixels the classifier normalises,
or float32 already normalised by `contract.preprocess`). A copy of `contract` sits beside
this file so that the stub can import it whatever Python path the server runs with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# Our bundled `contract` first: the server's working directory may hold another version.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from contract import load_spec, model_input  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.spec = load_spec(Path(args["model_repository"]) / "model_spec.json")
        self.output_name = config["output"][0]["name"]

    def _preprocess(self, request):
        images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
        arrays = []
        for index, data in enumerate(images):
            try:
                arrays.append(model_input(bytes(data), self.spec))
            # Any failure, not only ImageError, stays this request's: its batch mates go on.
            except Exception as e:
                message = f"image {index}: {e}" if len(images) > 1 else str(e)
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                )
        tensor = pb_utils.Tensor(self.output_name, np.stack(arrays))
        return pb_utils.InferenceResponse(output_tensors=[tensor])

    def execute(self, requests: list) -> list:
        return [self._preprocess(r) for r in requests]
