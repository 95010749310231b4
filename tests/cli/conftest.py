"""Command-line tests run in a folder of their own: `patchpack train` without `--out` writes its run
folder under ./runs, which must not land in the repository."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _in_a_fresh_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
