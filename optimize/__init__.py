"""The optimize stage: a trained run -> pruned / INT8 ONNX variants -> Triton model repository."""
