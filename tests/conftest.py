"""Shared test settings.

Hypothesis runs without per-example deadlines (the first call into cryptography or a
100k-entry map is slow and would make deadlines flaky) and prints a reproduction blob on
failure, so a failing example can be replayed exactly. Select a profile with
``HYPOTHESIS_PROFILE=thorough`` for a longer run.
"""

import os

from hypothesis import settings

settings.register_profile("avm", deadline=None, print_blob=True)
settings.register_profile("thorough", parent=settings.get_profile("avm"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "avm"))
