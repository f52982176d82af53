"""Hypothesis profiles for the fuzz targets.

* ``fuzz-ci`` (default): 300 examples per property, no deadline; bounded so the
  whole folder runs in well under a minute in CI.
* ``long``: 20,000 examples per property, for a run on demand::

      HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz -q

* ``million``: 1,000,000 examples per property, the release check of the hardening
  issue, on demand (hours for the whole folder: run one target at a time, e.g.
  ``HYPOTHESIS_PROFILE=million python -m pytest tests/fuzz/test_record_fuzz.py -q``).
  Its example database is kept, so the inputs Hypothesis found interesting are
  replayed first on the next run.

The chosen profile is re-registered as ``fuzz``; the fuzz modules decorate
their properties with ``settings.get_profile("fuzz")`` so that the choice does
not change the hypothesis tests elsewhere in the suite (they keep their own
settings). Failures print a reproduction blob (``@reproduce_failure``); the
example database lives in ``.hypothesis/`` (git-ignored), so a failure found
once is tried first on the next run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("fuzz-ci", max_examples=300, deadline=None, print_blob=True)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "million", max_examples=1_000_000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz-ci"))
)
