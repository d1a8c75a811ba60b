"""Serve stage: run the model repository on a real Triton Inference Server (CPU, no Docker).

`python -m serve` starts the server; `serve.server.TritonServer` is the same thing as an API.
"""
