"""Files a user writes (data files, YAML configs) read as UTF-8 text, with one-line errors naming the file and line."""

from __future__ import annotations

import codecs
from pathlib import Path

from .errors import ConfigError

CHUNK_BYTES = 1 << 20


def _not_utf8(path: Path, error: UnicodeDecodeError, first_line: int) -> ConfigError:
    """The error for bytes that are not UTF-8, at the line of ``error.start``
    (``error.object`` starts at ``first_line``)."""
    line = first_line + error.object[: error.start].count(b"\n")
    return ConfigError(
        f"{path}, line {line}: byte 0x{error.object[error.start]:02x} is not UTF-8 text. Save the file as UTF-8 "
        "(your editor's encoding setting, or iconv -f <its encoding> -t utf-8)."
    )


def check_text_file(path: Path, *, empty_hint: str) -> None:
    """A ConfigError when ``path`` is not UTF-8 (naming the line) or holds only whitespace (then ``empty_hint``).

    Reads the file once, in chunks, so any size is fine.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, blank = 1, True
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise _not_utf8(path, error, line) from None
            line += chunk.count(b"\n")
            blank = blank and not chunk.strip()
    try:
        decoder.decode(b"", final=True)  # a multi-byte character cut off by the end of the file
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error, line) from None
    if blank:
        raise ConfigError(f"{path} is empty. {empty_hint}")


def read_text(path: Path, *, max_bytes: int) -> str:
    """The UTF-8 text of ``path``; a ConfigError when it is larger than ``max_bytes`` or not UTF-8."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ConfigError(
            f"{path} has {size} bytes, more than the {max_bytes} a config file may have; is it the right file?"
        )
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error, 1) from None
