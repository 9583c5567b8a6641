"""`attnkit data download` against a loopback HTTP server serving fixture files."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import stat
import tarfile
import threading
from functools import partial

import pytest

from attnkit.cli import main
from attnkit.data.download import RemoteFile, download
from attnkit.errors import DataError


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (base_url, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_plain_files_checked_and_stored(server, tmp_path):
    base, www = server
    (www / "dev.txt").write_bytes(b"headline\t1\n")
    (www / "class.txt").write_bytes(b"a\nb\n")
    sources = {
        "toy": [
            RemoteFile(f"{base}/dev.txt", "dev.txt", _sha(b"headline\t1\n")),
            RemoteFile(f"{base}/class.txt", "class.txt"),
        ]
    }
    logged: list[str] = []
    target = download("toy", tmp_path / "data", sources=sources, log=logged.append)
    assert (target / "dev.txt").read_bytes() == b"headline\t1\n"
    assert any("no published checksum for class.txt" in line for line in logged)
    assert sorted(p.name for p in target.iterdir()) == ["class.txt", "dev.txt"]


def test_corrupted_file_is_rejected_and_nothing_kept(server, tmp_path):
    base, www = server
    (www / "dev.txt").write_bytes(b"tampered\n")
    sources = {"toy": [RemoteFile(f"{base}/dev.txt", "dev.txt", _sha(b"original\n"))]}
    with pytest.raises(DataError, match="checksum mismatch"):
        download("toy", tmp_path / "data", sources=sources, log=lambda _m: None)
    assert list((tmp_path / "data").iterdir()) == []


def test_archive_members_are_checked(server, tmp_path):
    base, www = server
    good = {"pack/reut2-000.sgm": b"<REUTERS>one</REUTERS>", "pack/README.txt": b"readme"}
    (www / "pack.tar.gz").write_bytes(_tarball(good))
    member_sha = (("pack/reut2-000.sgm", _sha(good["pack/reut2-000.sgm"])),)
    sources = {"toy": [RemoteFile(f"{base}/pack.tar.gz", "pack.tar.gz", unpack="tar", members_sha256=member_sha)]}
    target = download("toy", tmp_path / "data", sources=sources, log=lambda _m: None)
    assert (target / "reut2-000.sgm").read_bytes() == good["pack/reut2-000.sgm"]

    (www / "pack.tar.gz").write_bytes(_tarball({**good, "pack/reut2-000.sgm": b"<REUTERS>two</REUTERS>"}))
    with pytest.raises(DataError, match="fails its checksum"):
        download("toy", tmp_path / "other", sources=sources, log=lambda _m: None)
    assert list((tmp_path / "other").iterdir()) == []
    (www / "pack.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="not a readable archive"):
        download("toy", tmp_path / "third", sources=sources, log=lambda _m: None)


def test_missing_file_and_unknown_name(server, tmp_path, capsys):
    base, _ = server
    sources = {"toy": [RemoteFile(f"{base}/absent.txt", "absent.txt")]}
    with pytest.raises(DataError, match="download failed"):
        download("toy", tmp_path / "data", sources=sources, log=lambda _m: None)
    assert main(["data", "download", "nope", "--data-dir", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_cli_mirror_fetches_the_real_file_names(server, tmp_path, capsys):
    base, www = server
    # The THUCNews entry's files, served by a mirror; dev/test checksums will not match fixtures.
    for name in ("train.txt", "class.txt"):
        (www / name).write_bytes(b"x\t0\n")
    (www / "dev.txt").write_bytes(b"wrong\t0\n")
    code = main(["data", "download", "thucnews_title", "--data-dir", str(tmp_path / "t"), "--mirror", base])
    assert code == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "t" / "dev.txt").exists()


def test_train_downloads_a_missing_dataset_first(server, tmp_path, capsys, monkeypatch):
    from attnkit.data import download as download_module
    from tests.data.test_readers import SGML

    base, www = server
    archive = _tarball({"reuters/reut2-000.sgm": SGML.encode("latin-1")})
    (www / "reuters21578.tar.gz").write_bytes(archive)
    monkeypatch.setitem(
        download_module.SOURCES, "reuters21578", [RemoteFile(f"{base}/reuters21578.tar.gz", "r.tar.gz", unpack="tar")]
    )
    folder = tmp_path / "absent"
    code = main(
        ["train", "classify", "--dataset", "reuters_r8", "--data-dir", str(folder), "--out", str(tmp_path / "r")]
    )
    captured = capsys.readouterr()
    assert "not found there; downloading it" in captured.out
    assert (folder / "reut2-000.sgm").is_file()
    # The two-story fixture has a single R8 training class, which is then a clear error.
    assert code == 2 and "only one class" in captured.err


def test_only_the_expected_members_of_an_archive_are_kept(server, tmp_path):
    """Another member of the same base name, or any other file, cannot reach the data folder."""
    base, www = server
    files = {
        "pack/reut2-000.sgm": b"<REUTERS>one</REUTERS>",
        "extra/reut2-000.sgm": b"<REUTERS>evil</REUTERS>",
        "pack/run.sh": b"rm -rf ~",
    }
    (www / "pack.tar.gz").write_bytes(_tarball(files))
    member_sha = (("pack/reut2-000.sgm", _sha(files["pack/reut2-000.sgm"])),)
    sources = {"toy": [RemoteFile(f"{base}/pack.tar.gz", "pack.tar.gz", unpack="tar", members_sha256=member_sha)]}
    target = download("toy", tmp_path / "data", sources=sources, log=lambda _m: None)
    assert sorted(p.name for p in target.iterdir()) == ["reut2-000.sgm"]
    assert (target / "reut2-000.sgm").read_bytes() == files["pack/reut2-000.sgm"]


def test_archive_members_of_one_name_are_refused_not_overwritten(server, tmp_path):
    """An archive whose members are not listed is unpacked whole, flat: a name twice is refused."""
    base, www = server
    files = {"pack/reut2-000.sgm": b"<REUTERS>one</REUTERS>", "extra/reut2-000.sgm": b"<REUTERS>evil</REUTERS>"}
    (www / "pack.tar.gz").write_bytes(_tarball(files))
    sources = {"toy": [RemoteFile(f"{base}/pack.tar.gz", "pack.tar.gz", unpack="tar")]}
    with pytest.raises(DataError, match=r"holds both .*reut2-000\.sgm and .*reut2-000\.sgm; nothing was kept"):
        download("toy", tmp_path / "data", sources=sources, log=lambda _m: None)
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_downloaded_files_get_the_modes_the_umask_gives(server, tmp_path, mask):
    # The temporary file a download is written to is private (0600); the kept file must not stay so.
    base, www = server
    (www / "dev.txt").write_bytes(b"x\n")
    before = os.umask(mask)
    try:
        target = download("toy", tmp_path / "data", sources={"toy": [RemoteFile(f"{base}/dev.txt", "dev.txt")]})
    finally:
        os.umask(before)
    assert stat.S_IMODE((target / "dev.txt").stat().st_mode) == 0o666 & ~mask


def test_an_interrupted_download_leaves_no_partial_file(server, tmp_path, monkeypatch):
    base, www = server
    (www / "dev.txt").write_bytes(b"x" * 4096)

    def interrupted(source, out, length=0):
        out.write(source.read(100))
        raise KeyboardInterrupt

    monkeypatch.setattr("attnkit.data.download.shutil.copyfileobj", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download("toy", tmp_path / "data", sources={"toy": [RemoteFile(f"{base}/dev.txt", "dev.txt")]})
    assert list((tmp_path / "data").rglob("*")) == []
