"""Each downloader against small archives in the real formats, served on 127.0.0.1."""

import hashlib

import fixtures
import numpy as np
import pytest
from PIL import Image

from oodrepro import data
from oodrepro.data import download as dl
from oodrepro.sampling import sample_indices


def _fetch(server, archive_path, dest_dir, **override):
    checksum = override or {"md5": fixtures.md5(archive_path)}
    return dl.download(
        server.url(archive_path.name), dest_dir / archive_path.name, progress=False, **checksum
    )


def _convert(name, archives, tmp_path, **kw):
    """Convert verified archives into `name`'s array file and load it back."""
    out = tmp_path / f"{name}.npz"
    data.convert_download(name, archives, out, **kw)
    return data.load_dataset(out)


def test_download_verifies_md5_and_sha256(served, tmp_path):
    root, server = served
    (root / "blob.bin").write_bytes(b"x" * 1000)
    import hashlib

    sha = hashlib.sha256(b"x" * 1000).hexdigest()
    out = dl.download(
        server.url("blob.bin"), tmp_path / "raw" / "blob.bin", sha256=sha, progress=False
    )
    assert out.read_bytes() == b"x" * 1000


def test_corrupted_download_is_an_error_naming_the_file_and_is_deleted(served, tmp_path):
    root, server = served
    fx = fixtures.svhn(root)
    good_md5 = fixtures.md5(fx["paths"][0])
    blob = bytearray(fx["paths"][0].read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte in transit
    fx["paths"][0].write_bytes(bytes(blob))
    dest = tmp_path / "raw" / "test_32x32.mat"
    with pytest.raises(data.ChecksumError, match="test_32x32.mat"):
        dl.download(server.url("test_32x32.mat"), dest, md5=good_md5, progress=False)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temporary left behind either


@pytest.mark.parametrize("where", ["missing on the server", "no server", "missing local file"])
def test_a_failed_download_names_archive_url_and_the_way_out(served, tmp_path, where):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = {
        "missing on the server": served[1].url("test_32x32.mat"),
        "no server": f"http://127.0.0.1:{closed}/test_32x32.mat",
        "missing local file": (tmp_path / "nowhere" / "test_32x32.mat").as_uri(),
    }[where]
    dest = tmp_path / "raw" / "test_32x32.mat"
    with pytest.raises(dl.DownloadError) as err:
        dl.download(url, dest, md5="0" * 32, progress=False, retries=2)
    said = str(err.value)
    assert f"could not download test_32x32.mat from {url}" in said
    assert "downloads: {test_32x32.mat: {url:" in said and "file://" in said and str(dest) in said
    assert not dest.exists()


def test_a_local_copy_through_file_url(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"y" * 100)
    sha = hashlib.sha256(b"y" * 100).hexdigest()
    out = dl.download(
        (tmp_path / "blob.bin").as_uri(), tmp_path / "raw" / "blob.bin", sha256=sha, progress=False
    )
    assert out.read_bytes() == b"y" * 100


def test_download_without_checksum_is_refused(served, tmp_path):
    with pytest.raises(ValueError, match="checksum"):
        dl.download(served[1].url("x"), tmp_path / "x", progress=False)


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar(served, tmp_path, classes):
    root, server = served
    fx = fixtures.cifar(root, classes)
    archive = _fetch(server, fx["paths"][0], tmp_path)
    for split in ("train", "test"):
        name = f"cifar{classes}-{split}"
        images, labels = _convert(name, [archive], tmp_path)
        np.testing.assert_array_equal(images, fx[split][0])
        np.testing.assert_array_equal(labels, fx[split][1])


def test_svhn(served, tmp_path):
    root, server = served
    fx = fixtures.svhn(root)
    archive = _fetch(server, fx["paths"][0], tmp_path)
    images, labels = _convert("svhn-test", [archive], tmp_path)
    np.testing.assert_array_equal(images, fx["images"])
    np.testing.assert_array_equal(labels, fx["labels"])
    assert labels.min() >= 0 and labels.max() <= 9


def test_svhn_seeded_sample(served, tmp_path):
    root, server = served
    fx = fixtures.svhn(root, n=9)
    archive = _fetch(server, fx["paths"][0], tmp_path)
    a, _ = _convert("svhn-test", [archive], tmp_path / "a", sample=4, seed=5)
    b, _ = _convert("svhn-test", [archive], tmp_path / "b", sample=4, seed=5)
    assert a.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert all(any((img == ref).all() for ref in fx["images"]) for img in a)


ODIN_SETS = [
    ("lsun-crop", "LSUN.tar.gz", "LSUN", [(36, 36), (36, 36), (40, 36)]),
    ("lsun-resize", "LSUN_resize.tar.gz", "LSUN_resize", [(32, 32)] * 3),
    ("isun", "iSUN.tar.gz", "iSUN", [(32, 32)] * 3),
    ("tin-crop", "Imagenet.tar.gz", "Imagenet", [(36, 36)] * 3),
    ("tin-resize", "Imagenet_resize.tar.gz", "Imagenet_resize", [(32, 32)] * 3),
    (
        "textures",
        "dtd-r1.0.1.tar.gz",
        "dtd/images",
        [(300, 200), (200, 260), (320, 320), (120, 64)],
    ),
]


@pytest.mark.parametrize("name,filename,top,sizes", ODIN_SETS)
def test_image_folder_releases(served, tmp_path, name, filename, top, sizes):
    root, server = served
    fx = fixtures.image_folder_tar(root, filename, top, sizes)
    archive = _fetch(server, fx["paths"][0], tmp_path)
    images, labels = _convert(name, [archive], tmp_path)
    assert images.shape == (len(sizes), 32, 32, 3) and images.dtype == np.uint8
    assert (labels == -1).all()
    _, recipe = data.get(name)
    for got, src in zip(images, fx["arrays"], strict=True):
        np.testing.assert_array_equal(got, dl.to_rgb32(Image.fromarray(src), recipe))
        if src.shape[:2] == (32, 32):
            np.testing.assert_array_equal(got, src)  # 32×32 releases pass unchanged
        if recipe == "centre32":
            h, w = src.shape[:2]
            top, left = (h - 32) // 2, (w - 32) // 2
            np.testing.assert_array_equal(got, src[top : top + 32, left : left + 32])


def test_textures_recipes_differ(served, tmp_path):
    root, server = served
    fx = fixtures.image_folder_tar(
        root, "dtd-r1.0.1.tar.gz", "dtd/images", [(300, 200), (200, 260)]
    )
    archive = _fetch(server, fx["paths"][0], tmp_path)
    out = {}
    for name in ("textures", "textures@squash-bilinear", "textures@squash-lanczos"):
        out[name] = _convert(name, [archive], tmp_path)[0]
    assert not np.array_equal(out["textures"], out["textures@squash-bilinear"])
    assert not np.array_equal(out["textures@squash-bilinear"], out["textures@squash-lanczos"])


def test_places365_seeded_sample(served, tmp_path):
    root, server = served
    fx = fixtures.places365(root, n=5)
    archives = [_fetch(server, p, tmp_path) for p in fx["paths"]]
    images, labels = _convert("places365", archives, tmp_path, sample=3, seed=0)
    assert images.shape == (3, 32, 32, 3)
    expected = [dl.to_rgb32(Image.fromarray(a), "crop32") for a in fx["arrays"]]
    idx = np.sort(np.random.default_rng(0).choice(5, size=3, replace=False))
    for got, i in zip(images, idx, strict=True):
        np.testing.assert_array_equal(got, expected[i])


def test_recipes():
    img = Image.fromarray(
        np.arange(64 * 48 * 3, dtype=np.uint32).reshape(48, 64, 3).astype(np.uint8)
    )
    for recipe in ("crop32", "centre32", "squash-bilinear", "squash-lanczos"):
        assert dl.to_rgb32(img, recipe).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="unknown recipe"):
        dl.to_rgb32(img, "nope")
    with pytest.raises(KeyError, match="no recipe"):
        data.get("svhn-test@crop32")


def test_every_registered_archive_has_a_checksum_or_says_it_has_none():
    for archive in data.ARCHIVES.values():
        assert any(getattr(archive, k) for k in dl.PINS) or archive.unverified
    unverified = [a.filename for a in data.ARCHIVES.values() if a.unverified]
    assert unverified == ["test_lmdb.zip", "300K_random_images.npy", "WatermarkNN-448bf51.zip"]


def test_random_300k_outliers_are_sampled_from_the_served_array(served, tmp_path):
    root, server = served
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    np.save(root / "300K_random_images.npy", array)
    sha = hashlib.sha256((root / "300K_random_images.npy").read_bytes()).hexdigest()
    path = dl.download(
        server.url("300K_random_images.npy"),
        tmp_path / "300K_random_images.npy",
        sha256=sha,
        progress=False,
    )
    data.convert_download("random-300k", [path], tmp_path / "o.npz", sample=20, seed=3)
    images, labels = data.load_dataset(tmp_path / "o.npz")
    assert np.array_equal(images, array[sample_indices(50, 20, 3)]) and (labels == -1).all()


def test_outliers_from_a_users_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "nested").mkdir(parents=True)
    arrays = {}
    for name in ["b.png", "a.png", "nested/c.png"]:
        arrays[name] = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(arrays[name]).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    data.convert_download(
        "outliers-folder@centre32", [], tmp_path / "o.npz", folder=str(tmp_path / "imgs")
    )
    images, _ = data.load_dataset(tmp_path / "o.npz")
    assert len(images) == 3
    assert np.array_equal(images[0], arrays["a.png"][4:36, 8:40])  # sorted by path; centre crop
    with pytest.raises(ValueError, match="dataset_options"):
        data.convert_download("outliers-folder", [], tmp_path / "x.npz")


def test_an_archive_without_published_checksum_asks_for_one(served, tmp_path):
    with pytest.raises(ValueError, match="downloads.test_lmdb.zip.sha256"):
        dl.download(served[1].url("test_lmdb.zip"), tmp_path / "test_lmdb.zip", progress=False)


def test_lsun_test_lmdb(served, tmp_path):
    root, server = served
    fx = fixtures.lsun_test_lmdb(root)
    archive = _fetch(server, fx["paths"][0], tmp_path)
    images, _ = _convert("lsun-test", [archive], tmp_path)
    assert images.shape == (4, 32, 32, 3)
    for got, src in zip(images, fx["arrays"], strict=True):  # LMDB keys are sorted, as written
        np.testing.assert_array_equal(
            got, np.asarray(Image.fromarray(src).resize((32, 32), Image.LANCZOS))
        )


def test_tin200_test_split(served, tmp_path):
    root, server = served
    fx = fixtures.tin200(root)
    archive = _fetch(server, fx["paths"][0], tmp_path)
    images, _ = _convert("tin200-test", [archive], tmp_path)
    assert images.shape == (5, 32, 32, 3)  # the test split only, the train image ignored
    expected = sorted(zip([f"test_{i}.JPEG" for i in range(5)], fx["arrays"], strict=True))
    for got, (_, src) in zip(images, expected, strict=True):
        np.testing.assert_array_equal(
            got, np.asarray(Image.fromarray(src).resize((32, 32), Image.LANCZOS))
        )


def test_mnist(served, tmp_path):
    root, server = served
    fx = fixtures.mnist(root)
    archives = [_fetch(server, p, tmp_path) for p in fx["paths"]]
    images, labels = _convert("mnist-test", archives, tmp_path)
    np.testing.assert_array_equal(labels, fx["labels"])
    assert images.shape == (6, 32, 32, 3)
    grey = Image.fromarray(fx["images"][0]).convert("RGB").resize((32, 32), Image.BILINEAR)
    np.testing.assert_array_equal(images[0], np.asarray(grey))


class _Flaky:
    """An HTTP server that honours Range requests and breaks the connection of the first
    `breaks` responses after `cut` bytes: a download that must resume to complete."""

    def __init__(self, blob: bytes, cut: int, breaks: int = 1):
        import http.server
        import threading

        flaky, self.requests = self, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                flaky.requests.append(start)
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(blob) - start))
                self.end_headers()
                if len(flaky.requests) <= breaks:
                    self.wfile.write(blob[start : start + cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(blob[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/blob.bin"


def test_a_broken_download_is_retried_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.time, "sleep", lambda s: None)
    blob = bytes(range(256)) * 4000
    server = _Flaky(blob, cut=300_000)
    try:
        out = dl.download(
            server.url, tmp_path / "raw" / "blob.bin", sha256=hashlib.sha256(blob).hexdigest()
        )
    finally:
        server.httpd.shutdown()
    assert out.read_bytes() == blob
    assert server.requests == [0, 300_000]  # the second request asked only for the rest
    assert not (tmp_path / "raw" / ".blob.bin.part").exists()


def test_a_download_that_keeps_failing_gives_up_after_its_retries(tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    blob = b"z" * 100_000
    server = _Flaky(blob, cut=1000, breaks=10)
    try:
        with pytest.raises(dl.DownloadError, match=r"\(3 attempt\(s\)\): the connection closed"):
            dl.download(server.url, tmp_path / "b", sha256="0" * 64, retries=3, progress=False)
    finally:
        server.httpd.shutdown()
    assert server.requests == [0, 1000, 2000] and waits == [1, 2]
    assert (tmp_path / ".b.part").stat().st_size == 3000  # kept: the next try resumes there


def _lock_config(tmp_path, **downloads):
    return {"data": str(tmp_path / "data"), "downloads": downloads}


def test_the_lock_pins_a_first_fetch_and_refuses_a_later_copy_that_differs(tmp_path):
    from oodrepro.data import lock

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.npy").write_bytes(b"first copy")
    first = lock.check(raw, "x.npy", {})  # nothing published: pinned by the lock
    assert first == hashlib.sha256(b"first copy").hexdigest()
    assert lock.read(raw)["x.npy"]["sha256"] == first
    (raw / "x.npy").write_bytes(b"another copy")
    with pytest.raises(data.ChecksumError) as err:
        lock.check(raw, "x.npy", {})
    said = str(err.value)
    assert first in said and hashlib.sha256(b"another copy").hexdigest() in said
    assert "archives.lock.json" in said


def test_a_file_put_by_hand_is_checked_against_its_published_checksum(tmp_path):
    from oodrepro.data import lock

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "y.bin").write_bytes(b"hand-placed")
    good = hashlib.md5(b"hand-placed").hexdigest()
    assert lock.check(raw, "y.bin", {"md5": good}) == hashlib.sha256(b"hand-placed").hexdigest()
    (raw / "z.bin").write_bytes(b"hand-placed, but not the release")
    with pytest.raises(data.ChecksumError, match=f"expected {good}"):
        lock.check(raw, "z.bin", {"md5": good})
    assert "z.bin" not in lock.read(raw)


def test_an_unpinned_archive_is_reported_before_any_job_with_the_command_that_pins_it(tmp_path):
    from oodrepro import config as cfg

    config = cfg.validate(cfg.read_yaml("presets/unleashing-mask-icml23.yaml"))
    config["data"] = str(tmp_path / "data")
    lines = data.unpinned(config)
    assert len(lines) == 1 and lines[0].startswith("300K_random_images.npy: no checksum")
    assert "make fetch CONFIG=" in lines[0] and "archives.lock.json" in lines[0]
    raw = data.raw_folder(config)
    raw.mkdir(parents=True)
    (raw / "300K_random_images.npy").write_bytes(b"a stand-in")
    data.fetch(
        data.archive_source(config, "300K_random_images.npy"), raw / "300K_random_images.npy"
    )
    assert data.unpinned(config) == []  # pinned by the lock from now on
    assert (
        data.archive_source(config, "300K_random_images.npy")["sha256"]
        == hashlib.sha256(b"a stand-in").hexdigest()
    )


def test_make_fetch_gets_pins_and_lists_every_archive_of_a_config(served, tmp_path, capsys):
    import yaml

    from oodrepro import fetch

    root, server = served
    svhn = fixtures.svhn(root)["paths"][0]
    config = yaml.safe_load(open("config.yaml"))
    config["data"] = str(tmp_path / "data")
    config["benchmark"]["ood"] = ["svhn-test"]
    config["benchmark"].pop("groups")
    config["downloads"] = {svhn.name: {"url": server.url(svhn.name), "md5": fixtures.md5(svhn)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert fetch.main([str(path)]) == 0
    said = capsys.readouterr().out
    digest = hashlib.sha256(svhn.read_bytes()).hexdigest()
    assert f"{svhn.name}  sha256 {digest}  pinned by the config" in said
    assert data.lock.read(tmp_path / "data" / "raw")[svhn.name]["sha256"] == digest
    svhn.write_bytes(b"changed on the server")  # fetched again: the copy here is kept, verified
    assert fetch.main([str(path)]) == 0


def test_a_git_blob_id_pins_a_file_released_in_a_repository(tmp_path):
    """The id git gives a blob (SHA-1 of "blob <size>\\0" + bytes), as `git hash-object` prints."""
    import subprocess

    (tmp_path / "f.state").write_bytes(b"released weights")
    blob = subprocess.run(
        ["git", "hash-object", str(tmp_path / "f.state")], capture_output=True, text=True
    ).stdout.strip()
    assert dl.git_blob_id(tmp_path / "f.state") == blob
    dl.verify(tmp_path / "f.state", git_blob=blob)
    with pytest.raises(
        data.ChecksumError, match=f"git blob id mismatch for f.state: expected 0+, got {blob}"
    ):
        dl.verify(tmp_path / "f.state", git_blob="0" * 40)
