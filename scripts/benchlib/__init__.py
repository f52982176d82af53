"""Helpers of ``scripts/bench.py`` that need no server: the soak's per-minute rows and
verdict, the sustained window, the reports of the sustained, soak and 10 MB modes."""
