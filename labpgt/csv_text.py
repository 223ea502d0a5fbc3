"""Reading a user's CSV file as text: UTF-8 (a byte-order mark dropped), one-line errors."""

from __future__ import annotations

from pathlib import Path

from labpgt.errors import UserError


def read_csv_text(path: Path, option: str) -> str:
    """The text of a CSV file as UTF-8 (a byte-order mark is dropped); one-line errors."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{option}: {path} line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
            f"offset {exc.start}); save the file as UTF-8 CSV"
        ) from None
