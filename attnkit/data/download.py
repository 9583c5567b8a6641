"""`attnkit data download NAME`: fetch a standard dataset from its official source into the cache.

Each file is streamed to a temporary file, its SHA-256 checked against the value recorded here
(where the source publishes none, the digest we verified for the copy used in our benchmarks, or
none at all: then it is printed so the user can compare it), and only then renamed into place, so
a failed or corrupted download leaves nothing behind. Archives are unpacked with tarfile's "data"
filter (no absolute paths, no links out of the folder).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attnkit.atomic import usual_mode
from attnkit.errors import DataError


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where from, its SHA-256 (None = unknown), and what to do with it.

    `unpack`: "tar" unpacks an archive (and `members_sha256` checks the unpacked files), "gzip"
    keeps the file compressed as it is, None stores it as it is. An archive is unpacked into a fresh
    folder and only its `members` (default: the checksummed ones; none named: every file) move into
    the data folder, by base name, so that another member cannot overwrite a file there.
    """

    url: str
    name: str
    sha256: str | None = None
    unpack: str | None = None
    members_sha256: tuple[tuple[str, str], ...] = ()
    members: tuple[str, ...] = ()


REUTERS_SGM_SHA256 = (
    ("reut2-000.sgm", "9ff9bb40624ef992a03f62aace12e697dca1087abfd9b4d06aa787a6ad3e0687"),
    ("reut2-001.sgm", "1528e7e82d110d88d0234eb9619eadb7f9fd805711971df05975b92277dfdf4d"),
    ("reut2-002.sgm", "99f18068d0518952987dedd78c622e5c2a584e357d264d3754696c815f3e6628"),
    ("reut2-003.sgm", "78a3a8d7e04bc9d42c4614d5d5c60a4293dbe3f708df6fb5a71d9ef31f4b3fa3"),
    ("reut2-004.sgm", "726342c19a65873330b412378cd6a3f0d512035f5223146ddd60930c62eb6ff0"),
    ("reut2-005.sgm", "d09de619b6dd2d047d5124681f6df90550abaf592020d1c1ce338ae9b91522e7"),
    ("reut2-006.sgm", "b5535c0d66b01f4976f84621a4a795afbc00d2c4bd0a1b7ae426df6630fb361d"),
    ("reut2-007.sgm", "aa706007ec84a03537a3921ca976d60e11b3f99e4b9e9b2d5c81dd384d2c2062"),
    ("reut2-008.sgm", "a3994583694a00b7c744097c1d7eabfcf90f2e6650cc21663e46828035a336cb"),
    ("reut2-009.sgm", "29995f606dd1a9bdf907eacc9d879846c716860d9d9141676979474aaea39c7d"),
    ("reut2-010.sgm", "996df6008089bd09fa5b28a4d2eb0ee5f7b9d4601cde566fed3926ac82960fa3"),
    ("reut2-011.sgm", "d3a2782015247d9c2bffb8926267827fdd449c70d619435ef01a25a1c56a53ca"),
    ("reut2-012.sgm", "da31035d483851f2aebce5b66d779e5e2c0ac9dcfe098596c6d544e81c5604ab"),
    ("reut2-013.sgm", "8f7700bc0455fac3fcc12377ced4807b7df8aba1f21ecad059b9cc2b1cf0b8be"),
    ("reut2-014.sgm", "ef936bd3e0f36cf722afa9a6957563549775af32e9e28b4f539c8737ceda83ab"),
    ("reut2-015.sgm", "6d3bcec73eff871b8a5403588af814c4e50a0de6bc25707480522ab836f74026"),
    ("reut2-016.sgm", "be2f03a185fff70131f3b4fdbd6229b7ee2be077eba9691eaa597c8cfbda8812"),
    ("reut2-017.sgm", "f370e610b4b1342e41a98e0c426a08541044bd1d7e539674f32372a6060b73b5"),
    ("reut2-018.sgm", "a5f971bf25448e915781962309e669359a35fbcaf3017a806eca0590897f209a"),
    ("reut2-019.sgm", "d3b07097fba2633d130b4914aceba671645985248943ce9e39c289315339dffb"),
    ("reut2-020.sgm", "f6ad1b724125c202566c63b35ea0b5ee23881f8b7ed47a32829d5af05d8e860d"),
    ("reut2-021.sgm", "3f5196d32869723c9042aa5756805b4e90360f1f45ea17f4594fa0e2b3630b18"),
)

THUCNEWS = "https://raw.githubusercontent.com/649453932/Chinese-Text-Classification-Pytorch/master/THUCNews/data"

SOURCES: dict[str, list[RemoteFile]] = {
    # The UCI KDD archive's distribution of Lewis's Reuters-21578.
    "reuters21578": [
        RemoteFile(
            "https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.tar.gz",
            "reuters21578.tar.gz",
            unpack="tar",
            members_sha256=REUTERS_SGM_SHA256,
        )
    ],
    # Zhang et al. 2015's CSV release, as mirrored by fast.ai.
    "ag_news": [
        RemoteFile(
            "https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz",
            "ag_news_csv.tgz",
            unpack="tar",
            members_sha256=(
                ("ag_news_csv/test.csv", "d2a2cef4dfeb21ca17b463fd15e9e5a639c05823d03efabb3d28a75bbfe8d915"),
            ),
            members=("ag_news_csv/train.csv", "ag_news_csv/test.csv", "ag_news_csv/classes.txt"),
        ),
    ],
    "thucnews_title": [
        RemoteFile(f"{THUCNEWS}/train.txt", "train.txt"),
        RemoteFile(
            f"{THUCNEWS}/dev.txt",
            "dev.txt",
            "6ed73aa2c57ee1560c8f76570d48735c4b1c29ae4983fe3523d56e115813e175",
        ),
        RemoteFile(
            f"{THUCNEWS}/test.txt",
            "test.txt",
            "ebecc8c896635ad69730083ca7b81d37c42c9a5779bc05c9d2479d894e34f026",
        ),
        RemoteFile(f"{THUCNEWS}/class.txt", "class.txt"),
    ],
}


def download(
    name: str,
    target: Path,
    *,
    sources: dict[str, list[RemoteFile]] | None = None,
    mirror: str | None = None,
    log: Callable[[str], None] = print,
    timeout: float = 60.0,
) -> Path:
    """Fetch dataset `name` into folder `target`; return it. `mirror` replaces each URL's directory."""
    sources = SOURCES if sources is None else sources
    if name not in sources:
        raise DataError(f"unknown dataset {name!r}; can download: {', '.join(sorted(sources))}")
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DataError(f"--data-dir {target}: is a file, not a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"--data-dir {target}: cannot create the folder ({error.strerror})") from None
    for remote in sources[name]:
        url = f"{mirror.rstrip('/')}/{remote.url.rsplit('/', 1)[1]}" if mirror else remote.url
        log(f"fetching {url}")
        fetched = _fetch(url, target, timeout)
        try:
            digest = _sha256(fetched)
            if remote.sha256 and digest != remote.sha256:
                raise DataError(
                    f"{url}: checksum mismatch (got sha256 {digest}, expected {remote.sha256}); "
                    "the download is corrupt or the file has changed, nothing was kept"
                )
            if not remote.sha256:
                log(f"  no published checksum for {remote.name}; its sha256 is {digest}")
            if remote.unpack == "tar":
                _unpack(fetched, target, remote, url)
            else:
                os.replace(fetched, target / remote.name)
        finally:
            fetched.unlink(missing_ok=True)
    log(f"{name} is in {target}")
    return target


def _fetch(url: str, directory: Path, timeout: float) -> Path:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".download.")
    path = Path(tmp)
    usual_mode(path)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as error:
        path.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise DataError(f"{url}: download failed ({reason})") from None
    except BaseException:  # Ctrl-C mid-download: no partial file left in the data folder
        path.unlink(missing_ok=True)
        raise
    return path


def _unpack(archive: Path, target: Path, remote: RemoteFile, url: str) -> None:
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".unpack."))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError) as error:
            raise DataError(f"{url}: not a readable archive ({error})") from None
        for member, expected in remote.members_sha256:
            path = staging / member
            if not path.is_file():
                raise DataError(f"{url}: the archive has no {member}")
            if _sha256(path) != expected:
                raise DataError(f"{url}: {member} fails its checksum; nothing was kept")
        wanted = remote.members or tuple(member for member, _ in remote.members_sha256)
        if wanted:
            missing = [member for member in wanted if not (staging / member).is_file()]
            if missing:
                raise DataError(f"{url}: the archive has no {missing[0]}")
            for member in wanted:  # and nothing else the archive holds
                os.replace(staging / member, target / Path(member).name)
            return
        files = [item for item in staging.rglob("*") if item.is_file()]
        by_name: dict[str, Path] = {}
        for item in files:  # the data folder is flat: two members of one name would overwrite each other
            if item.name in by_name:
                first, second = (p.relative_to(staging) for p in (by_name[item.name], item))
                raise DataError(f"{url}: the archive holds both {first} and {second}; nothing was kept")
            by_name[item.name] = item
        for name, item in by_name.items():
            os.replace(item, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
