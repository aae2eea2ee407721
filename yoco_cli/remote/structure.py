"""Is a downloaded file whole? Checked from the file's own structure, for bodies nothing else vouches for.

A server that sends no Content-Length ends the body by closing the connection, so a body cut
short by a dropped connection looks complete to HTTP; with no published digest nothing else
would notice. Each format yoco downloads says where it ends:

    gzip         every member ends with its CRC and length; the stream must reach its end
    tar          512-byte headers with checksums, each followed by its data; ends with a zero block
    zip          (torch .pt files) the central directory sits at the very end of the file
    pickle       the last opcode is STOP ('.')
    MATLAB 5     (SVHN .mat) tagged elements that must tile the file exactly
    safetensors  the header's last data offset is the end of the file

`check(path)` streams through the file in bounded memory and returns what it verified, "" for a
format it does not know, or raises FetchError("... ends early") for a truncated file (exit 4: the
next fetch downloads it afresh) and IntegrityError for one that is whole but malformed (exit 3).
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from ..errors import FetchError, IntegrityError

CHUNK = 1 << 20


def check(path: Path, what: str) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    size = Path(path).stat().st_size
    if head[:2] == b"\x1f\x8b":
        return _gzip(path, what)
    if _is_tar_header(head):
        walker = _TarWalker(what)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                walker.feed(chunk)
        walker.finish()
        return "tar"
    if head[:4] == b"PK\x03\x04":
        return _zip(path, what)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return _pickle(path, what)
    if head[:10] == b"MATLAB 5.0" and len(head) >= 128:
        return _mat5(path, size, what)
    if len(head) >= 9 and head[8:9] == b"{":
        return _safetensors(path, size, head, what)
    return ""


def _short(what: str, detail: str) -> FetchError:
    return FetchError(f"the download of {what} ends early ({detail}): the connection was cut before the end",
                      "run the command again: the partial file was dropped and the next fetch starts over")


# -- gzip (and a tar inside it) ------------------------------------------------------------------
def _gzip(path: Path, what: str) -> str:
    probe: bytes | None = b""
    walker: _TarWalker | None = None
    for out in _gunzip(path, what):
        if probe is not None:  # the first 512 decompressed bytes say whether a tar is inside
            probe += out
            if len(probe) < 512:
                continue
            if _is_tar_header(probe[:512]):
                walker = _TarWalker(what)
                walker.feed(probe)
            probe = None
        elif walker is not None:
            walker.feed(out)
    if walker is not None:
        walker.finish()
        return "gzip+tar"
    return "gzip"


def _gunzip(path: Path, what: str):
    """Decompressed chunks of at most CHUNK bytes (a gzip bomb costs time, not memory); raises when
    the last member stops before its trailer. Concatenated members are allowed, zero padding too."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    ended = False  # the last member finished: only zero padding may follow
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            while chunk:
                if ended:
                    if chunk[:2] == b"\x1f\x8b":
                        d, ended = zlib.decompressobj(16 + zlib.MAX_WBITS), False
                    elif chunk.strip(b"\0"):
                        raise IntegrityError(f"the download of {what} has data after its gzip stream")
                    else:
                        break
                try:
                    out = d.decompress(chunk, CHUNK)
                except zlib.error as e:
                    raise IntegrityError(f"the download of {what} is not a valid gzip file ({e})") from None
                if out:
                    yield out
                if d.eof:
                    ended, chunk = True, d.unused_data
                else:
                    chunk = d.unconsumed_tail
    if not ended:
        raise _short(what, "the gzip stream stops before its end")


# -- tar -----------------------------------------------------------------------------------------
def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512 or not block.strip(b"\0"):
        return False
    return _tar_checksum_ok(block[:512])


def _tar_checksum_ok(block: bytes) -> bool:
    field = block[148:156].replace(b"\0", b" ").strip()
    try:
        want = int(field, 8)
    except ValueError:
        return False
    got = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    return want == got


def _tar_size(block: bytes) -> int:
    field = block[124:136]
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


class _TarWalker:
    """Follows tar headers through a byte stream: header, ceil(size/512) data blocks, next header...
    Complete when a zero block arrives where a header is due."""

    def __init__(self, what: str):
        self.what = what
        self.pending = b""   # bytes of the header being assembled
        self.skip = 0        # data bytes (with padding) still to pass
        self.done = False
        self.members = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view) and not self.done:
            if self.skip:
                n = min(self.skip, len(view))
                self.skip -= n
                view = view[n:]
                continue
            need = 512 - len(self.pending)
            self.pending += bytes(view[:need])
            view = view[need:]
            if len(self.pending) < 512:
                return
            block, self.pending = self.pending, b""
            if not block.strip(b"\0"):
                self.done = True
                return
            if not _tar_checksum_ok(block):
                raise IntegrityError(f"the download of {self.what} is not a valid tar archive "
                                     f"(bad header checksum after {self.members} members)")
            self.members += 1
            size = _tar_size(block)
            self.skip = -(-size // 512) * 512

    def finish(self) -> None:
        if not self.done:
            raise _short(self.what, f"the tar archive stops inside member {self.members}"
                         if self.skip or self.pending else "the tar archive has no end marker")


# -- zip, pickle, MATLAB 5, safetensors ----------------------------------------------------------
def _zip(path: Path, what: str) -> str:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # reads every member (streamed) and checks its CRC
    except zipfile.BadZipFile as e:
        raise _short(what, f"no zip directory at its end: {e}") from None
    except (OSError, EOFError, zlib.error, NotImplementedError) as e:
        raise IntegrityError(f"the download of {what} is a damaged zip file ({e})") from None
    if bad is not None:
        raise IntegrityError(f"the download of {what} is a damaged zip file (member {bad} fails its CRC)")
    return "zip"


def _pickle(path: Path, what: str) -> str:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        if f.read(1) != b".":
            raise _short(what, "the pickle does not end with its STOP opcode")
    return "pickle"


def _mat5(path: Path, size: int, what: str) -> str:
    """MATLAB 5 MAT-file: a 128-byte header, then tagged elements (8-byte tag: type, byte count;
    data padded to 8 bytes, except compressed elements). They must tile the file exactly."""
    with open(path, "rb") as f:
        header = f.read(128)
        order = "<" if header[126:128] == b"IM" else ">" if header[126:128] == b"MI" else None
        if order is None:
            return ""  # not a v5 file after all (v7.3 files are HDF5)
        pos = 128
        while pos < size:
            tag = f.read(8)
            if len(tag) < 8:
                raise _short(what, f"a MATLAB element header is cut at byte {pos}")
            kind, nbytes = struct.unpack(order + "II", tag)
            if kind >> 16:  # small element: 4 bytes of data packed into the tag
                pos += 8
                continue
            step = nbytes if kind == 15 else -(-nbytes // 8) * 8
            pos += 8 + step
            if pos > size:
                raise _short(what, f"a MATLAB element of {nbytes} bytes runs past the end of the file")
            f.seek(pos)
    return "mat"


def _safetensors(path: Path, size: int, head: bytes, what: str) -> str:
    n = int.from_bytes(head[:8], "little")
    if n > size - 8 or n > 100 << 20:
        return ""  # not safetensors after all
    with open(path, "rb") as f:
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return ""
    if not isinstance(header, dict):
        return ""
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    if 8 + n + max(ends, default=0) > size:
        raise _short(what, "the safetensors data stops before the last tensor ends")
    return "safetensors"
