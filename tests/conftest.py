"""Shared fixtures. Tests that read ../shared/data skip when it is absent, unless
LIGHTBRAIN_REQUIRE_SHARED_DATA=1 (as in CI), which turns the skip into a failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIGHTBRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _require_shared() -> Path:
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"{SHARED_DATA} is absent (real medical data lives beside the project in ../shared/data)"
    if os.environ.get("LIGHTBRAIN_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message + " and LIGHTBRAIN_REQUIRE_SHARED_DATA=1 makes these tests mandatory")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require_shared()


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory) -> Path:
    """Seed tiktoken's GPT-2 files from ../shared/data/gpt2 so `gpt2` works offline."""
    existing = os.environ.get("TIKTOKEN_CACHE_DIR")
    if existing and Path(existing, "6d1cbeee0f20b3d9449abfede4726ed8212e3aee").is_file():
        return Path(existing)
    data = _require_shared()
    cache = tmp_path_factory.mktemp("tiktoken")
    subprocess.run(["sh", str(data / "gpt2" / "seed_tiktoken_cache.sh"), str(cache)], check=True, capture_output=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache
