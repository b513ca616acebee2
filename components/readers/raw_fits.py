"""The HDU layout of a plain FITS file, read without astropy's header parser.

astropy parses every card of every header it opens (``Header.fromstring``, in Python): for
an SDSS spec-lite file, four headers and about 1,000 cards, that is two thirds of the time
a file takes from disk to Example (measured: ~10 ms of ~12 ms a file, which capped ingest
and predict near 150 files/s on 2 cores). :func:`scan` walks the 2880-byte blocks once,
keeps each card's raw bytes and parses a value only when it is asked for; the readers' binary
tables are then read with one numpy call (:func:`stellarpop.components.readers.sdss.table_columns`).

It covers what SDSS's own files are: uncompressed, an IMAGE primary and BINTABLE
extensions, fixed-length columns. Anything else raises :class:`NotPlain` and the caller
reads the file with astropy, which also writes the error messages for damaged files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

BLOCK = 2880
CARD = 80


class NotPlain(Exception):
    """A file the fast path does not read (the caller falls back to astropy)."""


def _value(raw: bytes):
    """A card's value field (after ``= ``) as FITS defines it: a string, bool, int or float."""
    raw = raw.strip()
    if raw.startswith(b"'"):
        out, i = [], 1
        while True:
            j = raw.find(b"'", i)
            if j < 0:
                raise NotPlain("unterminated string value")
            out.append(raw[i:j])
            if raw[j + 1 : j + 2] == b"'":  # '' is a quote inside the string
                out.append(b"'")
                i = j + 2
                continue
            break
        return b"".join(out).decode("ascii").rstrip()
    field = raw.split(b"/", 1)[0].strip()
    if field == b"T":
        return True
    if field == b"F":
        return False
    try:
        return int(field)
    except ValueError:
        pass
    try:
        return float(field.replace(b"D", b"E"))
    except ValueError:
        raise NotPlain(f"value {field[:20]!r}") from None


class RawHeader(Mapping):
    """A header's keyword -> value, parsed on first use (keywords are unique in SDSS files)."""

    def __init__(self, cards: dict[str, bytes]):
        self._cards = cards
        self._parsed: dict[str, object] = {}

    def __getitem__(self, key: str):
        if key not in self._parsed:
            self._parsed[key] = _value(self._cards[key])
        return self._parsed[key]

    def raw_cards(self) -> Iterator[tuple[str, bytes]]:
        """(keyword, the card's bytes after ``= ``), unparsed."""
        return iter(self._cards.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._cards)

    def __len__(self) -> int:
        return len(self._cards)


class RawHDU:
    """One HDU: its header, where the header and the data start, and the data's size."""

    def __init__(self, header: RawHeader, header_offset: int, data_offset: int, data_size: int, raw: bytes = b""):
        self.header = header
        self.raw_header = raw  # the header's blocks as read (equal for the tables of files of one layout)
        self._header_offset = header_offset  # the names astropy's HDUs carry (table_columns reads them)
        self._data_offset = data_offset
        self.data_size = data_size
        self.name = str(header.get("EXTNAME", "PRIMARY" if header_offset == 0 else "")).upper()

    @property
    def data(self):
        raise NotPlain("column data outside the fast table path")


def _header(buf: bytes, pos: int) -> tuple[dict[str, bytes], int]:
    """The cards of the header at ``pos`` and the offset of its data."""
    cards: dict[str, bytes] = {}
    while True:
        block = buf[pos : pos + BLOCK]
        if len(block) < BLOCK:
            raise NotPlain("truncated header")
        pos += BLOCK
        for i in range(0, BLOCK, CARD):
            card = block[i : i + CARD]
            key = card[:8].rstrip()
            if key == b"END":
                return cards, pos
            if card[8:10] == b"= ":
                cards[key.decode("ascii")] = card[10:]


def scan(path: str) -> list[RawHDU]:
    """Every HDU of an uncompressed FITS file (:class:`NotPlain` for what this does not read)."""
    if path.endswith(".gz"):
        raise NotPlain("compressed")
    with open(path, "rb") as fh:
        buf = fh.read()
    hdus, pos = [], 0
    while pos < len(buf):
        start = pos
        cards, pos = _header(buf, pos)
        header = RawHeader(cards)
        try:
            naxis = int(header["NAXIS"])
            bitpix = abs(int(header["BITPIX"]))
            dims = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
            pcount, gcount = int(header.get("PCOUNT", 0)), int(header.get("GCOUNT", 1))
        except (KeyError, TypeError, ValueError):
            raise NotPlain("header without its structure keywords") from None
        if (start and header.get("XTENSION") != "BINTABLE") or pcount:
            raise NotPlain("an extension that is no fixed-length binary table")
        size = bitpix // 8 * gcount * (pcount + math.prod(dims)) if naxis else 0
        hdus.append(RawHDU(header, start, pos, size, buf[start:pos]))
        pos += -(-size // BLOCK) * BLOCK
        if pos > len(buf):
            raise NotPlain("truncated data")
    if not hdus:
        raise NotPlain("no HDU")
    return hdus
