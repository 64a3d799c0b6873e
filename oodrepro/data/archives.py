"""The archive registry: every file the workflow can download, by file name, with its address
and checksum (a release's published md5, or a sha256 of ours), and Fashion-MNIST's release files,
which Debian's dataset-fashion-mnist also ships.
"""

from __future__ import annotations

from .download import Archive

FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FASHION_PACKAGE = "Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"  # Debian's package dataset-fashion-mnist
FASHION_FILES = [  # name, md5 of the released .gz, sha256 of its decompressed IDX content
    (
        "train-images-idx3-ubyte.gz",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
]
ARCHIVES: dict[str, Archive] = {
    a.filename: a
    for a in [
        Archive(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            md5="c58f30108f718f92721af3b95e74349a",
            size=170_498_071,
        ),
        Archive(
            "cifar-100-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            md5="eb9058c3a382ffc7106e4002c42a8d85",
            size=169_001_437,
        ),
        Archive(
            "test_32x32.mat",
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            md5="eb5a983be6a315427106f1b164d9cef3",
            size=64_275_384,
        ),
        Archive(
            "dtd-r1.0.1.tar.gz",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
            md5="fff73e5086ae6bdbea199a49dfb8a4c1",
        ),
        Archive(
            "filelist_places365-standard.tar",
            "http://data.csail.mit.edu/places/places365/filelist_places365-standard.tar",
            md5="35a0585fee1fa656440f3ab298f8479c",
        ),
        Archive(
            "val_256.tar",
            "http://data.csail.mit.edu/places/places365/val_256.tar",
            md5="e27b17d8d44f4af9a78502beb927f808",
        ),
        Archive(
            "t10k-images-idx3-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
            md5="9fb629c4189551a2d022fa330f9573f3",
            size=1_648_877,
        ),
        Archive(
            "t10k-labels-idx1-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
            md5="ec29112dd5afa0611ce80d1b7f02629c",
            size=4_542,
        ),
        Archive(
            "tiny-imagenet-200.zip",
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            md5="90528d7ca1a48142e341f4ef8d21d0de",
            size=248_100_043,
        ),
        # No checksum is published for the LSUN test release: pin one you trust in the
        # config (`downloads: {test_lmdb.zip: {sha256: ...}}`); without it the download is refused.
        Archive("test_lmdb.zip", "http://dl.yf.io/lsun/scenes/test_lmdb.zip", unverified=True),
        # WatermarkNN's repository at its single commit, holding the trigger set; no checksum
        # is published, so the config must pin one (or point `dataset_options` at a folder).
        # Hendrycks' 300K random images, the auxiliary outliers of the Energy-OE / POEM code
        # (de-duplicated against the CIFAR test sets); no published checksum: pin one.
        Archive(
            "300K_random_images.npy",
            "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
            unverified=True,
            size=300_000 * 32 * 32 * 3 + 128,
        ),  # the array and its .npy header
        Archive(
            "WatermarkNN-448bf51.zip",
            "https://github.com/adiyoss/WatermarkNN/archive/448bf51.zip",
            unverified=True,
        ),
        # Hendrycks' WRN-40-2 CIFAR baselines as released with the Energy-OOD code (the backbones
        # of Watermarking for OOD); sha256 of the released files, pinned here
        Archive(
            "cifar10_wrn_pretrained_epoch_99.pt",
            "https://github.com/wetliu/energy_ood/raw/master/CIFAR/snapshots/pretrained/cifar10_wrn_pretrained_epoch_99.pt",
            sha256="0b59e178577382a0cf5d1e079d1d019f6a33b0801b7d123a59e51b4b32972637",
        ),
        Archive(
            "cifar100_wrn_pretrained_epoch_99.pt",
            "https://github.com/wetliu/energy_ood/raw/master/CIFAR/snapshots/pretrained/cifar100_wrn_pretrained_epoch_99.pt",
            sha256="3751f516b81ef9d27290f08a3de78d65a3771f477bd6a6caefa81b330dc34baf",
        ),
        # Unleashing Mask's released DenseNet-BC-100s (ZFancy/Unleashing-Mask, runs/ at commit
        # 1640ce6): `last` the final-stage model after 100 epochs, `best` the middle stage.
        # Pinned by their git blob ids; the lock file records the sha256 of the first fetch.
        *(
            Archive(
                f"densenet_{bench}_{stage}.state",
                f"https://github.com/ZFancy/Unleashing-Mask/raw/1640ce6/runs/densenet_{bench}_{stage}.state",
                git_blob=blob,
            )
            for bench, stage, blob in (
                ("cifar10", "best", "0106f267ab2c2fe15463a92eda78692e28e2a248"),
                ("cifar10", "last", "036afa94bc43e1f18a81c00fffddb0609b6894ff"),
                ("cifar100", "best", "a2f76bb9f0005f8e33c70d9642a9eebf4088c6e3"),
                ("cifar100", "last", "707b4f4ef7331f8d590dbddc463b6f7c8e656d51"),
            )
        ),
        # Fashion-MNIST's release (zalandoresearch/fashion-mnist). Debian's dataset-fashion-mnist
        # installs the same IDX files recompressed: read from there when present, verified by
        # the sha256 of the decompressed content (the release's md5 cannot match a new gzip).
        *(
            Archive(
                f"fashion-mnist-{name}",
                f"{FASHION_URL}/{name}",
                md5=md5,
                content_sha256=content,
                local_copy=f"{FASHION_DEBIAN}/{name}",
                local_package=FASHION_PACKAGE,
            )
            for name, md5, content in FASHION_FILES
        ),
        # The ODIN releases (facebookresearch/odin README links).
        Archive(
            "LSUN.tar.gz",
            "https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz?dl=1",
            md5="458a0a0ab8e5f1cb4516d7400568e460",
        ),
        Archive(
            "LSUN_resize.tar.gz",
            "https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz?dl=1",
            md5="278b7b31c8cb7e804a1465a8ce03a2dc",
        ),
        Archive(
            "iSUN.tar.gz",
            "https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1",
            md5="be77b0f2c26fda898afac5f99645ee70",
        ),
        Archive(
            "Imagenet.tar.gz",
            "https://www.dropbox.com/s/avgm2u562itwpkl/Imagenet.tar.gz?dl=1",
            md5="7c0827e4246c3718a5ee076e999e52e5",
        ),
        Archive(
            "Imagenet_resize.tar.gz",
            "https://www.dropbox.com/s/kp3my3412u5k9rl/Imagenet_resize.tar.gz?dl=1",
            md5="0f9ff11d45babf2eff5fe12281d1ac31",
        ),
    ]
}
