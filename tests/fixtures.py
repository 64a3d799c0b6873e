"""Small archives in the real release formats, and a local HTTP server that serves them.

The downloaders are tested offline against the stand-ins a rehearsal uses
(`oodrepro.data.standins`): every archive is built from a seed, with known contents, so
the converted arrays can be checked value by value.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

from oodrepro.data.standins import (  # noqa: F401  (the builders the tests use)
    cifar,
    image_folder_tar,
    lsun_test_lmdb,
    mnist,
    places365,
    svhn,
    tin200,
)


def dry_run(config_file, directory) -> str:
    """What Snakemake plans for `config_file` in `directory` (it must plan without error)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(root / "Snakefile"),
            "--directory",
            str(directory),
            "--configfile",
            str(config_file),
            "--replace-workflow-config",
            "--dry-run",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class LocalServer:
    """Serve a directory on 127.0.0.1 (a free port) for the duration of a test."""

    def __init__(self, directory: Path):
        handler = functools.partial(_Quiet, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
