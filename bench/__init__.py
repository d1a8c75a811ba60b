"""`python -m bench`: in-process baselines, served load tests, comparisons and a report.

Modules, one job each: config (typed settings), stats (percentiles and the window rule),
noise (other processes' CPU load), loadgen (async closed/open loop clients), triton_stats (the
server's queue/compute split), inprocess + test_inprocess (pytest-benchmark baselines),
fastapi_app + fastapi_server (the FastAPI baseline on the served engine, its launcher),
perf_analyzer (NVIDIA's cross-check), repository (variants, the ensemble and config
variations), search (serving config search), images + rawpath + pipeline (the raw path: encoded
test images through the ensemble, and its in-process baselines), replicas (1 and N servers on
the same cores), paired (the headline ratios again, both sides back to back in alternating
rounds), summary (targets and verdict), report (markdown, plots, CSV), errors (what a section
may fail with), run (the CLI)."""
