"""The data folder's lock file: the sha256 of every archive a run has read, pinned at first sight.

Most archives have a published checksum (the registry's md5 or sha256, or one a config pins).
The others are pinned by their first download (`make fetch`), after which any copy that differs
is refused, naming both hashes. A file put into `<data>/raw/` by hand is verified the same way
before any job, and every archive's sha256 reaches the manifest from here.

The lock keeps each file's size and mtime, so an unchanged file is not hashed again.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from .download import ChecksumError, content_digest, file_digest, git_blob_id

LOCK = "archives.lock.json"  # in the raw archives' folder


def lock_path(raw_folder) -> Path:
    return Path(raw_folder) / LOCK


def read(raw_folder) -> dict[str, dict]:
    path = lock_path(raw_folder)
    return json.loads(path.read_text()) if path.exists() else {}


@contextmanager
def _editing(raw_folder):
    """The lock's entries, written back atomically under an exclusive flock (parallel
    downloads, or cluster jobs sharing the folder, record at the same time)."""
    path = lock_path(raw_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".flock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        entries = read(raw_folder)
        yield entries
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)


def _content(path: Path) -> str | None:
    try:
        return content_digest(path)
    except OSError:  # not gzip
        return None


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def check(raw_folder, name: str, sums: dict) -> str:
    """The sha256 of `<raw_folder>/<name>` once it matches its pins (`sums`: md5, sha256 or git
    blob id of the registry or the config, any may be None; `content`: the gunzipped bytes'
    sha256, which a recompressed copy matches instead) and the lock's earlier record; recorded
    in the lock. A mismatch raises ChecksumError naming both hashes; the file is left as it is."""
    path = Path(raw_folder) / name
    known = read(raw_folder).get(name)
    if known and {k: known.get(k) for k in ("bytes", "mtime_ns")} == _stat(path):
        return known["sha256"]  # verified before and unchanged since
    sha256 = file_digest(path, "sha256")
    same_content = sums.get("content") and _content(path) == sums["content"].lower()
    digests = {
        "sha256": lambda: sha256,
        "md5": lambda: file_digest(path, "md5"),
        "git blob id": lambda: git_blob_id(path),
    }
    expected = [  # (kind, value, where the value comes from)
        ("sha256", None if same_content else sums.get("sha256"), "sha256"),
        ("md5", None if same_content else sums.get("md5"), "md5"),
        ("git blob id", sums.get("git_blob"), "git blob id"),
        ("sha256", known and known["sha256"], f"sha256 recorded in {lock_path(raw_folder)}"),
    ]
    for kind, value, source in expected:
        if value and (actual := digests[kind]()) != value.lower():
            raise ChecksumError(
                f"{path}: {kind} {actual}, expected {value} ({source}). Delete the "
                "file to download it again, or pin the copy you trust"
            )
    with _editing(raw_folder) as entries:
        entries[name] = {"sha256": sha256, **_stat(path)}
    return sha256
