"""Image checks, standardisation and per-image features, from a single full decode.

Ingest decodes each image exactly once; validation, the standard copy and the features all come
from that decode, which is what keeps ingest within a small factor of a bare ``PIL`` decode.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# A truncated JPEG must fail loudly, never decode as a grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ALLOWED_FORMATS = {"JPEG", "PNG"}
EXIF_ORIENTATION = 0x0112
# What PIL raises (ValueError) when a PNG text or ICC chunk inflates past its limits
# (PngImagePlugin.MAX_TEXT_CHUNK, MAX_TEXT_MEMORY): a small file that would expand to gigabytes.
METADATA_BOMB_SIGNS = ("Decompressed data too large", "Too much memory used in text chunks")


class ImageRejected(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more)"


def rejection(path: str, exc: BaseException, doing: str = "decoded") -> ImageRejected:
    """Any exception the decoder (or a conversion after it) raised, as a quarantine reason.

    A hostile file can make PIL raise nearly anything (``ValueError``, ``OSError``,
    ``SyntaxError``, ``struct.error``, ``MemoryError``...); intake never lets one of them fail the
    batch. Metadata bombs and pixel bombs keep their own rules; the rest is ``corrupt_image``.
    """
    text = _clip(str(exc))
    if isinstance(exc, ValueError) and any(sign in text for sign in METADATA_BOMB_SIGNS):
        return ImageRejected(
            "metadata_bomb",
            f"{path}: a compressed metadata chunk (text or ICC profile) inflates past the "
            f"decoder's limit; not decoded ({text})",
        )
    if isinstance(exc, Image.DecompressionBombError):
        return ImageRejected("decompression_bomb", f"{path}: {text}; not decoded")
    return ImageRejected(
        "corrupt_image", f"{path}: cannot be {doing} ({type(exc).__name__}: {text})"
    )


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 1280


@dataclass
class DecodedImage:
    image: Image.Image
    format: str
    width: int
    height: int
    passthrough: bool


def _open_header_only(data: bytes) -> Image.Image:
    """Open lazily (header only), with our own pixel limit instead of PIL's global one.

    PIL refuses huge headers with an exception whose message is about PIL; the limit here is the
    platform's, reported with the file's name, so PIL's check is lifted for the header read.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def decode_image(path: str, data: bytes, limits: ImageLimits) -> DecodedImage:
    """Fully decoded image, or ``ImageRejected`` naming the file and the rule it broke."""
    if not data:
        raise ImageRejected("empty_file", f"{path}: zero-byte file")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            "too_large", f"{path}: {len(data):,} bytes exceeds the limit of {limits.max_bytes:,}"
        )
    try:
        img = _open_header_only(data)
    except (UnidentifiedImageError, ModuleNotFoundError):
        # ModuleNotFoundError: a third-party patch of Image.open (Ultralytics' HEIF fallback)
        # failing offline on the same unidentified bytes.
        raise ImageRejected(
            "not_an_image", f"{path}: not an image (no JPEG or PNG header)"
        ) from None
    except Exception as e:  # chunks read while opening: text/ICC bombs, broken headers
        raise rejection(path, e, "opened") from None
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"{path}: header claims {w}x{h} = {w * h:,} pixels, over the limit of "
            f"{limits.max_pixels:,}; not decoded",
        )
    if img.format not in ALLOWED_FORMATS:
        raise ImageRejected("unsupported_format", f"{path}: format {img.format} is not JPEG or PNG")
    try:
        img.load()
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken streams
        raise rejection(path, e, "decoded fully") from None
    if w < 8 or h < 8:
        raise ImageRejected("too_small", f"{path}: {w}x{h} is smaller than 8x8")
    fmt = img.format
    rotated = orientation not in (1, None)
    passthrough = (
        fmt == "JPEG" and img.mode == "RGB" and not rotated and max(w, h) <= limits.max_side
    )
    return DecodedImage(img, fmt, w, h, passthrough)


def standard_image_bytes(decoded: DecodedImage, data: bytes, limits: ImageLimits) -> bytes:
    """The standard form: an upright RGB JPEG no larger than ``max_side``.

    A conforming JPEG is kept byte for byte (re-encoding would cost time and quality); anything
    else (PNG, alpha, greyscale, EXIF rotation, oversize) is converted once here.
    """
    if decoded.passthrough:
        return data
    img = ImageOps.exif_transpose(decoded.image) or decoded.image
    img = img.convert("RGB")
    if max(img.size) > limits.max_side:
        img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def image_stats(img: Image.Image) -> dict[str, float]:
    """Brightness, contrast and sharpness in [0, 1] units, from a ~160 px grey subsample.

    Nearest-neighbour subsampling costs almost nothing next to the decode and keeps pixel-level
    detail (which a box filter would smooth away from the sharpness measure). Drift compares
    batches with each other, so consistency matters, not the absolute scale.
    """
    w, h = img.size
    factor = max(1, min(w, h) // 160)
    small = img.resize((w // factor, h // factor), Image.Resampling.NEAREST) if factor > 1 else img
    g = np.asarray(small.convert("L"), dtype=np.float32) * (1 / 255.0)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return {
        "brightness": float(g.mean()),
        "contrast": float(g.std()),
        "sharpness": float(lap.var()),
    }
