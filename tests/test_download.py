"""Resumable, verified downloads (fpt.data.download) against a local HTTP server on 127.0.0.1:
range requests after a cut connection, servers that ignore ranges, 416 on a whole partial,
checksum mismatches, progress reporting, and the SHA-256 record in a dataset's marker."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fpt.data import download as dl
from fpt.data.download import ChecksumError, DownloadError, download
from fpt.tasks import listops  # declares the listops dataset and its fetch

SIZE = 3 * 2**20 + 12345  # a few MB, not a multiple of the read size
MAX_REQUESTS = 20  # the server answers 503 beyond this, so no test can loop on it
TIMEOUT = 5  # seconds, client and server side


def _payload(size: int = SIZE) -> bytes:
    out, block, i = bytearray(), b"", 0
    while len(out) < size:
        block = hashlib.sha256(block + i.to_bytes(8, "little")).digest()
        out += block
        i += 1
    return bytes(out[:size])


class Server:
    """Serves `content` at any path. `cuts`: byte budgets for the first requests (the
    connection is cut after that many body bytes, the headers having announced the full
    length); `ignore_range`: always 200 with the whole body. Records each request's Range."""

    def __init__(self, content: bytes):
        self.content = content
        self.cuts: list[int] = []
        self.ignore_range = False
        self.stall = 0.0  # on a cut, sleep this long (the client times out) instead of closing
        self.ranges: list[str | None] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = TIMEOUT
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with server.lock:
                    server.ranges.append(self.headers.get("Range"))
                    n = len(server.ranges)
                    cut = server.cuts.pop(0) if server.cuts else None
                if n > MAX_REQUESTS:
                    self.send_error(503, "too many requests")
                    return
                body, start = server.content, 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
                self.end_headers()
                rest = body[start:]
                if cut is not None and cut < len(rest):
                    self.wfile.write(rest[:cut])
                    self.wfile.flush()
                    if server.stall:
                        time.sleep(server.stall)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(rest)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=TIMEOUT)


@pytest.fixture
def server():
    with Server(_payload()) as s:
        yield s


def _get(server, dest, **kw):
    kw = {"timeout": TIMEOUT, "retries": 3, "backoff": 0.01, "progress": False, **kw}
    return download(server.url, dest, **kw)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_cut_download_resumes_with_a_range_request(server, tmp_path):
    k = 1_000_003
    server.cuts = [k]
    dest = _get(server, tmp_path / "f.bin", sha256=_sha(server.content))
    assert _sha(dest.read_bytes()) == _sha(server.content)
    assert server.ranges == [None, f"bytes={k}-"]
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # partial renamed away


def test_two_cuts_resume_twice_and_a_later_call_resumes_a_kept_partial(server, tmp_path):
    server.cuts = [500_000, 700_000]
    dest = _get(server, tmp_path / "f.bin", sha256=_sha(server.content))
    assert dest.read_bytes() == server.content
    assert server.ranges == [None, "bytes=500000-", "bytes=1200000-"]
    # retries exhausted: the partial is kept, a later call picks it up
    server.ranges.clear()
    server.cuts = [100_000, 100_000]
    with pytest.raises(DownloadError, match=r"g\.bin\.partial.*again to resume"):
        _get(server, tmp_path / "g.bin", retries=1)
    assert (tmp_path / "g.bin.partial").stat().st_size == 200_000
    dest = _get(server, tmp_path / "g.bin", sha256=_sha(server.content))
    assert dest.read_bytes() == server.content and server.ranges[-1] == "bytes=200000-"
    assert not (tmp_path / "g.bin.partial").exists()


def test_a_stalled_connection_times_out_and_resumes(server, tmp_path):
    server.cuts, server.stall = [600_000], 1.5
    t0 = time.monotonic()
    dest = _get(server, tmp_path / "f.bin", sha256=_sha(server.content), timeout=0.3)
    assert dest.read_bytes() == server.content
    assert server.ranges == [None, "bytes=600000-"]
    assert time.monotonic() - t0 < 1.4  # the client gave up on the stalled read


def test_a_server_that_ignores_ranges_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    server.cuts = [800_000]
    dest = _get(server, tmp_path / "f.bin", sha256=_sha(server.content))
    assert dest.read_bytes() == server.content
    assert server.ranges == [None, "bytes=800000-"]  # asked, got a 200, started over


def test_a_checksum_mismatch_leaves_neither_file_nor_partial(server, tmp_path):
    server.cuts = [300_000]
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        _get(server, tmp_path / "f.bin", sha256=wrong, hint="run `fpt fetch-data x`")
    msg = str(err.value)
    assert str(tmp_path / "f.bin") in msg and wrong in msg and _sha(server.content) in msg
    assert "fpt fetch-data x" in msg and "again" in msg
    assert list(tmp_path.iterdir()) == []
    md5 = hashlib.md5(server.content).hexdigest()
    with pytest.raises(ChecksumError, match=r"md5 .* is " + md5):
        _get(server, tmp_path / "f.bin", md5="f" * 32)
    assert list(tmp_path.iterdir()) == []
    assert _get(server, tmp_path / "f.bin", md5=md5).read_bytes() == server.content


def test_a_whole_partial_is_accepted_on_416_only_with_the_right_size_and_checksum(server, tmp_path):
    good = _sha(server.content)
    part = tmp_path / "f.bin.partial"
    part.write_bytes(server.content)
    dest = _get(server, tmp_path / "f.bin", sha256=good)
    assert dest.read_bytes() == server.content and not part.exists()
    assert server.ranges == [f"bytes={SIZE}-"]  # one request, answered 416, nothing re-sent
    # right size, wrong bytes: the checksum rejects it and deletes it
    bad = bytearray(server.content)
    bad[12345] ^= 1
    (tmp_path / "g.bin.partial").write_bytes(bytes(bad))
    with pytest.raises(ChecksumError):
        _get(server, tmp_path / "g.bin", sha256=good)
    assert not (tmp_path / "g.bin.partial").exists() and not (tmp_path / "g.bin").exists()
    # longer than the file: 416 with another total, so it starts over
    server.ranges.clear()
    (tmp_path / "h.bin.partial").write_bytes(server.content + b"extra")
    dest = _get(server, tmp_path / "h.bin", sha256=good)
    assert dest.read_bytes() == server.content
    assert server.ranges == [f"bytes={SIZE + 5}-", None]


def test_progress_reaches_the_total(server, tmp_path, capsys):
    seen = []
    server.cuts = [1_500_000]
    _get(server, tmp_path / "f.bin", on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (SIZE, SIZE)
    assert (1_500_000, SIZE) in seen  # the resumed attempt starts where the cut left off
    assert all(total == SIZE for _, total in seen)
    log = capsys.readouterr().err
    assert "(100%)" in log and "resuming at" in log  # log lines when stderr is not a tty
    assert log.count("%)") <= 12
    _get(server, tmp_path / "g.bin", progress=True)  # the tqdm bar
    err = capsys.readouterr().err
    assert "100%" in err and "g.bin" in err


def test_an_http_error_names_the_url_and_is_not_retried(tmp_path):
    class NotFound(BaseHTTPRequestHandler):
        calls = 0

        def log_message(self, *args):
            pass

        def do_GET(self):
            NotFound.calls += 1
            self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/nope"
        with pytest.raises(DownloadError, match=r"/nope: HTTP 404"):
            download(url, tmp_path / "x", timeout=TIMEOUT, retries=3, backoff=0.01)
        assert NotFound.calls == 1 and list(tmp_path.iterdir()) == []
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=TIMEOUT)


def _lra_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "val", "test"):
            data = b"Source\tTarget\n( [MAX 2 9 ] )\t9\n[MIN 3 4 ]\t3\n"
            info = tarfile.TarInfo(f"lra_release/listops-1000/basic_{split}.tsv")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("lra_release/other/big.bin")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"skip"))
    return buf.getvalue()


def test_listops_fetch_records_and_later_checks_sha256_in_its_marker(tmp_path, monkeypatch):
    archive = _lra_archive()
    with Server(archive) as server:
        monkeypatch.setattr(listops, "LRA_URL", server.url)
        monkeypatch.setattr(dl, "BACKOFF_S", 0.01)
        server.cuts = [len(archive) // 2]
        marker = dl.fetch("listops", tmp_path)
        lines = marker.read_text().splitlines()
        assert lines[0] == "ok"
        rec = dl.recorded_sha256("listops", tmp_path)
        assert rec["lra_release.tar.gz"] == _sha(archive)
        tsv = tmp_path / "listops-1000/basic_val.tsv"
        assert rec["listops-1000/basic_val.tsv"] == _sha(tsv.read_bytes())
        assert not (tmp_path / "lra_release.tar.gz").exists()  # archive deleted
        assert len(server.ranges) == 2 and server.ranges[1] == f"bytes={len(archive) // 2}-"
        # a later run verifies the TSVs without downloading
        dl.fetch("listops", tmp_path)
        assert len(server.ranges) == 2
        # a changed TSV is fetched again, and the new archive is checked against the record
        tsv.write_text("Source\tTarget\n[MAX 1 ]\t1\n")
        dl.fetch("listops", tmp_path)
        assert (
            len(server.ranges) == 3 and _sha(tsv.read_bytes()) == rec["listops-1000/basic_val.tsv"]
        )
        tsv.write_text("Source\tTarget\n[MAX 1 ]\t1\n")
        server.content = archive + b"\0" * 512  # the source changed
        with pytest.raises(ChecksumError, match=r"lra_release\.tar\.gz.*fetch-data listops"):
            dl.fetch("listops", tmp_path)
        assert not (tmp_path / "lra_release.tar.gz.partial").exists()
