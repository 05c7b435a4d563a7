"""Where raw dataset files come from: a local folder, or the official archive (downloaded,
verified against its published SHA-256, extracted safely and cached atomically).

Every raw file is verified by its per-file SHA-256 before it is parsed, so a truncated or
corrupted file is reported (naming the file, the official URL and where to put it by hand)
instead of silently producing different numbers.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from utils.atomic import current_umask
from utils.config import ConfigError

ENV_VAR = "ROBUSTREC_DATA"


class DatasetError(RuntimeError):
    """A dataset problem; the message is one line naming the file and the fix."""


class SplitFilesError(DatasetError, ConfigError):
    """A problem of ``dataset.split_files`` (an id out of range, a pair in both files, a user
    without a test row …): one line naming the file, the line and the fix. It is also a
    ``ConfigError``, so ``main.py`` reports it like a config error (exit code 2)."""


@dataclass(frozen=True)
class RawSource:
    folder: str            # sub-folder of the data root holding the files
    ratings_file: str      # the file that is parsed
    sha256: str            # of the ratings file
    url: str               # the official archive
    archive_sha256: str | None


SOURCES: dict[str, RawSource] = {
    "filmtrust": RawSource(
        "filmtrust", "ratings.txt",
        "241167424e24d588e8871d68641e94ead98d5b3a4f0db01ef3181a74ad35e7a1",
        "https://guoguibing.github.io/librec/datasets/filmtrust.zip",
        "de4a55cb4ae26f663d88e9ad1ba1fae2d0d6d7a7499e37dc5245bab470c2d13c"),
    "ml-100k": RawSource(
        "ml-100k", "u.data",
        "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    "ml-1m": RawSource(
        "ml-1m", "ratings.dat",
        "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
}


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hand_hint(src: RawSource, target: Path) -> str:
    return f"download {src.url}, extract it and place {src.ratings_file} at {target}"


def verify_file(path: Path, src: RawSource) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing; {_hand_hint(src, path)}")
    actual = sha256_of(path)
    if actual != src.sha256:
        raise DatasetError(
            f"{path}: SHA-256 mismatch (truncated or corrupt file, got {actual[:12]}..., "
            f"expected {src.sha256[:12]}...); replace it: {_hand_hint(src, path)}")
    return path


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip, refusing members whose path would escape ``dest``."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            target = (dest / member.filename).resolve()
            if target != dest and dest not in target.parents:
                raise DatasetError(
                    f"{archive}: member '{member.filename}' escapes the extraction folder; "
                    "the archive is unsafe, delete it and download the official one")
        zf.extractall(dest)


def download(url: str, dest: Path, sha256: str | None) -> Path:
    """Download ``url`` to ``dest`` atomically and check its SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download.", dir=dest.parent)
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            raise DatasetError(
                f"cannot download {url} ({exc.__class__.__name__}); download it by hand "
                f"and set dataset.root or ${ENV_VAR} to the folder holding its files") from None
        if sha256 is not None and sha256_of(tmp) != sha256:
            raise DatasetError(f"{url}: downloaded archive fails its SHA-256 check; retry, or "
                               f"download it by hand and set ${ENV_VAR}")
        os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp's 0600 would hide it from others
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def locate(name: str, root: str | None, cache_dir: str) -> Path:
    """Path of the verified ratings file of dataset ``name``.

    ``root`` (or ``$ROBUSTREC_DATA``) names a folder that holds ``<folder>/<ratings file>``;
    without one, the official archive is downloaded into ``cache_dir`` once.
    """
    src = SOURCES[name]
    root = root or os.environ.get(ENV_VAR)
    if root:
        return verify_file(Path(root) / src.folder / src.ratings_file, src)
    cache = Path(cache_dir) / "datasets" / name
    target = cache / src.ratings_file
    if target.is_file():
        return verify_file(target, src)
    archive = cache / Path(src.url).name
    if not archive.is_file():
        download(src.url, archive, src.archive_sha256)
    elif src.archive_sha256 and sha256_of(archive) != src.archive_sha256:
        archive.unlink()
        raise DatasetError(f"{archive}: corrupt cached archive removed; run again to re-download")
    staging = Path(tempfile.mkdtemp(prefix=".extract.", dir=cache))
    try:
        safe_extract(archive, staging)
        found = sorted(staging.rglob(src.ratings_file))
        if not found:
            raise DatasetError(f"{archive}: no {src.ratings_file} inside; {_hand_hint(src, target)}")
        verify_file(found[0], src)
        os.replace(found[0], target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
