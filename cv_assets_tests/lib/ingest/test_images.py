import io

import numpy as np
import pytest
from PIL import Image

from cv_assets.lib.ingest.images import (
    ImageLimits,
    ImageRejected,
    decode_image,
    image_stats,
    standard_image_bytes,
)
from cv_assets_tests.support.landing import PNG_CHUNK_PAST_EOF, inflating, png_with_chunk

pytestmark = pytest.mark.unit
LIMITS = ImageLimits()


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(w: int = 64, h: int = 48, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def rejected(data: bytes, limits: ImageLimits = LIMITS) -> ImageRejected:
    with pytest.raises(ImageRejected) as exc:
        decode_image("images/x.jpg", data, limits)
    assert exc.value.message.startswith("images/x.jpg: ")
    return exc.value


def test_truncated_jpeg_is_rejected_as_corrupt():
    data = encode(noise(256, 256))
    assert rejected(data[: len(data) // 2]).rule == "corrupt_image"


def test_zero_byte_file_is_rejected():
    assert rejected(b"").rule == "empty_file"


def test_text_named_jpg_is_not_an_image():
    assert rejected(b"hello, I am text\n").rule == "not_an_image"


def test_gif_is_an_unsupported_format():
    assert rejected(encode(noise(), "GIF")).rule == "unsupported_format"


def test_oversized_file_is_rejected_against_the_configured_limit():
    data = encode(noise(256, 256), quality=100)
    err = rejected(data, ImageLimits(max_bytes=len(data) - 1))
    assert err.rule == "too_large" and f"{len(data):,} bytes" in err.message


def test_decompression_bomb_header_is_rejected_without_decoding():
    import struct
    import zlib

    png = bytearray(encode(noise(8, 8), "PNG"))
    png[16:24] = struct.pack(">II", 30000, 30000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])) & 0xFFFFFFFF)
    err = rejected(bytes(png))
    assert err.rule == "decompression_bomb" and "30000x30000" in err.message


def test_conforming_jpeg_passes_through_byte_for_byte():
    data = encode(noise())
    dec = decode_image("images/a.jpg", data, LIMITS)
    assert dec.passthrough and standard_image_bytes(dec, data, LIMITS) == data


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_png_and_odd_modes_are_standardised_to_rgb_jpeg(mode):
    data = encode(noise(mode=mode), "PNG")
    dec = decode_image("images/a.png", data, LIMITS)
    out = Image.open(io.BytesIO(standard_image_bytes(dec, data, LIMITS)))
    assert not dec.passthrough and out.format == "JPEG" and out.mode == "RGB"
    assert out.size == (64, 48)


def test_large_images_are_scaled_to_max_side_keeping_aspect():
    data = encode(noise(400, 200))
    limits = ImageLimits(max_side=100)
    dec = decode_image("images/a.jpg", data, limits)
    out = Image.open(io.BytesIO(standard_image_bytes(dec, data, limits)))
    assert out.size == (100, 50)


def test_exif_rotated_jpeg_is_made_upright():
    img = noise(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = encode(img, exif=exif)
    dec = decode_image("images/a.jpg", data, LIMITS)
    out = Image.open(io.BytesIO(standard_image_bytes(dec, data, LIMITS)))
    assert out.size == (40, 80)


def test_image_stats_rank_brightness_contrast_and_sharpness():
    base = noise(320, 320)
    dark = Image.eval(base, lambda v: v // 3)
    flat = Image.new("RGB", (320, 320), (128, 128, 128))
    s_base, s_dark, s_flat = image_stats(base), image_stats(dark), image_stats(flat)
    assert s_dark["brightness"] < s_base["brightness"]
    assert s_flat["contrast"] < 0.01 < s_base["contrast"]
    assert s_flat["sharpness"] < s_base["sharpness"]


@pytest.mark.slow
def test_ultralytics_pil_patch_cannot_turn_not_an_image_into_a_runtime_install():
    from cv_assets.lib.training.yolo import prepare_ultralytics

    prepare_ultralytics()
    from PIL import UnidentifiedImageError

    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b"plain text, not an image"))
    assert rejected(b"plain text, not an image").rule == "not_an_image"


@pytest.mark.parametrize(
    ("kind", "body", "after_idat"),
    [
        (b"zTXt", b"Comment\0\0", False),
        (b"iCCP", b"icc\0\0", False),
        (b"zTXt", b"Comment\0\0", True),  # read by load(), not by open()
    ],
    ids=["ztxt", "iccp", "ztxt_after_idat"],
)
def test_text_and_icc_chunk_bombs_are_metadata_bombs(kind, body, after_idat):
    import time

    # ~200 KB on disk that would inflate to 200 MB: PIL stops at its chunk limit and raises
    # ValueError, which used to escape intake and fail the whole batch.
    data = png_with_chunk(kind, body + inflating(200 * 1024 * 1024), after_idat)
    assert len(data) < 300_000
    t0 = time.perf_counter()
    err = rejected(data)
    assert time.perf_counter() - t0 < 1.0
    assert err.rule == "metadata_bomb" and "inflates past the decoder's limit" in err.message


@pytest.mark.parametrize(
    "data",
    [
        # A chunk that claims 1 MB in a 100-byte file: OSError "Truncated File Read" from open().
        encode(noise(32, 32), "PNG")[:33] + PNG_CHUNK_PAST_EOF,
        # IHDR declaring 5 bytes: ValueError "Truncated IHDR chunk" from open().
        encode(noise(32, 32), "PNG")[:8] + b"\x00\x00\x00\x05" + encode(noise(32, 32), "PNG")[12:],
        # A JPEG whose APP1 segment runs past the end of the file.
        encode(noise(32, 32))[:2] + b"\xff\xe1\xff\xffExif\0\0",
    ],
    ids=["png_chunk_past_eof", "png_short_ihdr", "jpeg_segment_past_eof"],
)
def test_any_exception_from_the_decoder_is_a_rejection_naming_the_file(data):
    err = rejected(data)
    assert err.rule == "corrupt_image"
    assert "cannot be opened" in err.message
