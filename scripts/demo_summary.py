"""The last lines of `make demo`: accuracy per variant and where everything was written."""

import json
import sys
import time
from pathlib import Path

run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/default")
repo = Path(sys.argv[2] if len(sys.argv) > 2 else "model_repository")
report = json.loads((run / "optimize_report.json").read_text())
verify = json.loads((run / "serve_verify.json").read_text())
print("\ndemo summary")
print(f"  {'variant':<18}{'engine':<13}{'top-1':>8}{'drop':>8}{'bs8 img/s':>11}  deployed")
for v in report["variants"]:
    print(
        f"  {v['name']:<18}{v['engine']:<13}{v['top1']:>8.2%}{v['top1_drop']:>+8.2f}"
        f"{v['throughput_bs8']:>11,.0f}  {'yes' if v['deployed'] else 'no: ' + v['why']}"
    )
agree = verify["agreement"]
print(
    f"  served {verify['ensemble']} -> {verify['classifier']}: top-1 agrees with in-process "
    f"{verify['engine']} on {agree['raw_vs_local']}/{agree['of']} (raw bytes) and "
    f"{agree['tensor_vs_local']}/{agree['of']} (tensors); served top-1 "
    f"{verify['top1_on_sample']['raw']:.2%}"
)
if len(sys.argv) > 3:
    minutes, seconds = divmod(round(time.time() - int(sys.argv[3])), 60)
    print(f"  wall time:    {minutes} min {seconds} s")
print(f"  run folder:   {run}/ (metrics.json, optimize_report.md, PNG plots)")
print(f"  repository:   {repo}/  (make serve; python client/infer.py IMAGE)")
