"""PNG checks shared by the report and plot tests."""

from __future__ import annotations

import struct
from io import BytesIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_valid_png(data: bytes, size: tuple[int, int]) -> None:
    from PIL import Image

    assert png_size(data) == size
    with Image.open(BytesIO(data)) as image:
        image.load()  # decodes every chunk: a truncated or corrupt file raises
        assert image.size == size
        # Not a blank canvas: a chart has many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20
