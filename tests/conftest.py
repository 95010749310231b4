"""Shared test set-up: this folder on ``sys.path`` so ``from media import ...`` / ``from videos import ...``
work from every sub-folder, and fixtures used across test folders."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed sequence of examples (derandomize), so a run is
# reproducible; locally each run explores new examples. HYPOTHESIS_PROFILE overrides either.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture
def tar_shards(tmp_path):
    """A writer of small webdataset shards: ``shards(n, per_shard=..., seed=...) -> [urls]``."""
    from media import make_samples, write_shards

    def make(n: int = 12, per_shard: int = 4, seed: int = 0, **kw):
        return write_shards(tmp_path, make_samples(n, seed=seed, **kw), per_shard=per_shard)

    return make
