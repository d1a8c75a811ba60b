"""Client stage: classify images through a running Triton server, and verify what it serves.

`python client/infer.py` is the command-line client; `python client/verify.py` the acceptance
check against in-process ONNX Runtime. Neither needs anything from `serve`.
"""
