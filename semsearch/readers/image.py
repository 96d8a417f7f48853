"""Images (PNG, JPEG, TIFF, WebP, BMP, GIF) through OCR, only with ``ocr="images"``; each frame of a TIFF is a page.

Pillow decodes (its decompression-bomb limit kept: an image over it is refused with a warning);
the OCR engine reads. Screenshots and photos rarely hold the text a search is for, and OCR costs
seconds per image, so images are left out unless asked for.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Any

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, DocumentBuilder, file_stem, one_line

KIND = "image"
SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"})
# Signatures that text cannot start with (PNG's and JPEG's hold bytes that are not text). The
# short ones (BMP's "BM", GIF's, TIFF's, RIFF's) are taken only with a valid header after them:
# "BMAL1 and CLOCK..." or "GIF89a is..." are text.
_STRONG_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})  # the DIB header's kinds, by size
_WEBP_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")
_WEAK_SIGNATURES = (b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"RIFF")
MAX_FRAMES = 200  # pages of a multi-page TIFF


def matches(path: Path, head: bytes) -> bool:
    if head.startswith(_STRONG_SIGNATURES) or _is_bmp(head) or _is_gif(head) or _is_tiff(head):
        return True
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and head[12:16] in _WEBP_CHUNKS:
        return True
    # An image's name with its signature's first bytes: an image, however odd its header (a BMP
    # whose size field is wrong); Pillow decides, and a warning names a broken one.
    return path.suffix.lower() in SUFFIXES and (not head or head.startswith(_WEAK_SIGNATURES))


def _is_bmp(head: bytes) -> bool:
    """ "BM", the file's size, two reserved words (zero), where the pixels start, and the size of a
    known DIB header, which the pixels follow."""
    if not head.startswith(b"BM") or len(head) < 18:
        return False
    size, reserved, offset, header = struct.unpack_from("<IIII", head, 2)
    return reserved == 0 and header in _BMP_HEADER_SIZES and offset >= 14 + header and (size == 0 or size >= offset)


def _is_gif(head: bytes) -> bool:
    """ "GIF87a"/"GIF89a", the screen descriptor and its colour table, then a block: an extension
    ("!"), an image (",") or the end (";"); and binary, not text, after the signature."""
    if not head.startswith((b"GIF87a", b"GIF89a")) or len(head) < 13:
        return False
    packed = head[10]
    after = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    if len(head) > after and head[after] not in b"!,;":
        return False
    from semsearch.readers.text import looks_like_text

    return not looks_like_text(head[6:])


def _is_tiff(head: bytes) -> bool:
    """A TIFF's byte order, 42, and where its first directory is (past the 8-byte header)."""
    if head.startswith(b"II*\x00"):
        order = "<"
    elif head.startswith(b"MM\x00*"):
        order = ">"
    else:
        return False
    return len(head) >= 8 and struct.unpack_from(order + "I", head, 4)[0] >= 8


def read_image(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    from semsearch.readers import ocr

    builder = DocumentBuilder()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on damaged metadata are not ours to print
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            frames = getattr(image, "n_frames", 1)
            if frames > MAX_FRAMES:
                raise ExtractError(f"image has {frames} frames (over {MAX_FRAMES}): refused")
            numbers = range(1 if image.format == "GIF" else frames)
            for frame in numbers:
                if options.on_ocr is not None:
                    options.on_ocr(path, frame, len(numbers))
                image.seek(frame)
                picture = _on_white(ImageOps.exif_transpose(image))
                side = max(picture.size)
                if side > ocr.RENDER_MAX_SIDE:
                    scale = ocr.RENDER_MAX_SIDE / side
                    picture = picture.resize((max(1, int(picture.width * scale)), max(1, int(picture.height * scale))))
                pixels = np.asarray(picture)[:, :, ::-1].copy()  # RGB -> BGR, the engine's order
                builder.start_part()
                builder.block(ocr.recognize_cached(pixels, options.ocr_cache))
            if options.on_ocr is not None:
                options.on_ocr(path, len(numbers), len(numbers))
    except ExtractError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ExtractError(f"image too large to decode ({one_line(exc)})") from None
    except UnidentifiedImageError:
        raise ExtractError("broken image (not a picture Pillow can read)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ExtractError(f"broken image ({type(exc).__name__}: {one_line(exc)})") from None
    doc = builder.document(KIND, file_stem(path), part_kind="page", split_parts=True)
    if len(doc.part_starts) <= 1:
        doc.part_starts = []  # one picture: its hits are located by line
    return doc


def _on_white(picture: Any) -> Any:
    """The picture as RGB, transparent parts white (a logo's text on a transparent background)."""
    from PIL import Image

    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return picture.convert("RGB")


def _wanted(options: ReadOptions) -> bool:
    return options.ocr == "images"


# Version 2: text that starts like a short signature ("BMP/SMAD1...") is no longer an image.
READER = Reader(KIND, matches, read_image, no_text="no text found in the image", version=2, wanted=_wanted)
