import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import LocalServer  # noqa: E402


@pytest.fixture
def served(tmp_path):
    """A directory of archives and a running local HTTP server in front of it."""
    root = tmp_path / "served"
    root.mkdir()
    with LocalServer(root) as server:
        yield root, server
