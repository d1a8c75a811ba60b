"""Reliability and security checks against a real Triton on 127.0.0.1: bad inputs (chaos),
a bounded soak, and injected faults. `python -m reliability {chaos,soak,faults} --help`.
"""
