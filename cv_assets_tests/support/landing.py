"""What lands: synthetic batches from the project's own generator, and hand-built bad files."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.synth.batches import BatchSummary, parse_shift, write_batches

# What each planted fault must be quarantined as (synth's kind -> intake's rule).
EXPECTED_RULE = {
    "truncated_jpeg": "corrupt_image",
    "zero_byte": "empty_file",
    "text_as_jpg": "not_an_image",
    "decompression_bomb": "decompression_bomb",
    "class_out_of_range": "class_out_of_range",
    "coords_outside": "coords_outside",
    "zero_area_box": "zero_area_box",
    "nan_value": "nonfinite",
    "wrong_columns": "wrong_columns",
    "non_numeric": "non_numeric",
    "missing_label": "missing_label",
    "orphan_label": "label_without_image",
    "duplicate_image": "duplicate_image",
    "bad_filename": "non_portable_name",
    "symlink": "symlink",
}

# A tEXt chunk that claims 1,000,000 bytes and holds 13: appended after IHDR.
PNG_CHUNK_PAST_EOF = b"\x00\x0f\x42\x40tEXtComment\0short"


def land(
    cfg: PlatformConfig,
    batches: int = 1,
    images: int = 12,
    seed: int = 0,
    size: int = 96,
    shift: list[str] | None = None,
    **kw,
) -> list[BatchSummary]:
    """Synthetic batches in the landing zone, written by the project's own generator."""
    return write_batches(
        Path(cfg.landing_root),
        batches=batches,
        images_per_batch=images,
        seed=seed,
        size=size,
        shift=parse_shift(shift or []),
        **kw,
    )


def png_with_chunk(kind: bytes, body: bytes, after_idat: bool = False) -> bytes:
    """A valid 32x32 PNG with one extra chunk (CRC correct) before IDAT, or after it."""
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    png = buf.getvalue()
    chunk = struct.pack(">I", len(body)) + kind + body
    chunk += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    at = png.rindex(b"IEND") - 4 if after_idat else 33  # 8-byte signature + 25-byte IHDR
    return png[:at] + chunk + png[at:]


def inflating(n_bytes: int) -> bytes:
    """A few hundred bytes that inflate to ``n_bytes`` zeros."""
    return zlib.compress(b"\0" * n_bytes, 9)
