import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The project's shared/ folder (golden parity data), beside the checkout."""
    env = os.environ.get("QINYU_SHARED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared", REPO / "shared"]:
        if (cand / "parity").is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    d = shared_dir()
    if d is None:
        pytest.skip("golden parity data not found: set QINYU_SHARED to the shared/ folder")
    return d / "parity"
