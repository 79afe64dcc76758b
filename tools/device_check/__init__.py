"""The device check: one prepared run on the lent GPU machine (benchmarks/device_check.sh;
see benchmarks/README.md). Stages in plan.py, their work in stages.py, the kernels it
exercises one by one in tiers.py."""
