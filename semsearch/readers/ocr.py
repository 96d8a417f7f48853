"""Offline OCR: page images -> text through RapidOCR's bundled ONNX models, cached by image hash.

RapidOCR (Apache-2.0) ships its PP-OCR detection, orientation and recognition models inside the
wheel and runs them on the onnxruntime semsearch already uses; nothing is fetched at run time (the
model paths are pinned to the bundled files). Recognition is the slow step of indexing a scanned
page, so every result is kept in a cache keyed by the hash of the page's pixels: indexing the same
page again, under any name or after a rebuild, reads the cache instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import ExtractError

if TYPE_CHECKING:
    import numpy as np

# A page is rendered so that its longer side has at most this many pixels (about 200 dpi for
# A4/Letter): enough for body text, and RapidOCR scales larger images down to 2000 anyway.
RENDER_MAX_SIDE = 2400
RENDER_DPI = 200
# Recognized pieces below this confidence are dropped (RapidOCR's own default is 0.5).
MIN_SCORE = 0.5
# Bumped when the engine, its models or the rendering change what a page's key should mean.
ENGINE_ID = "rapidocr-ppocrv6-small-nocls-columns-3"

_engine: Any = None
_engine_threads = 0  # the threads _engine was made with
_threads: int | None = None  # set_threads(): the threads the engine is to run on (None: usable CPUs)
_engine_lock = threading.Lock()


def set_threads(threads: int | None) -> None:
    """The CPUs the OCR engine of this process may use (None: every CPU it may run on). A cluster's
    reading task sets the CPUs Ray gave it, so that a node's tasks do not share its cores."""
    global _threads
    _threads = threads


def engine_threads() -> int:
    """The threads the engine runs on: :func:`set_threads`'s, else the CPUs this process may run on.

    Always a number: left to onnxruntime (RapidOCR's -1), its thread pool pins a thread to each
    core of the machine, past the process's affinity (a process held to one core of two used
    181% CPU; two such processes on two cores each read 0.95 pages/s against 1.4 with one thread)."""
    if _threads:
        return max(1, _threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load_engine() -> Any:
    global _engine, _engine_threads
    threads = engine_threads()
    with _engine_lock:
        if _engine is None or _engine_threads != threads:
            try:
                import rapidocr
                from rapidocr import RapidOCR
            except ImportError as exc:
                raise ExtractError(f"the OCR engine is not installed ({exc}); reinstall semsearch") from None
            models = Path(rapidocr.__file__).parent / "models"
            params: dict[str, object] = {
                "Global.log_level": "error",
                # The text-line orientation classifier turned an upright typewritten line upside
                # down into junk (recipe scan: 93.7% -> 99.8% characters right without it); pages
                # that are scanned upside down are rare.
                "Global.use_cls": False,
                "Global.text_score": MIN_SCORE,
                "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
                "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
                "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
            for key in ("Det.model_path", "Cls.model_path", "Rec.model_path"):
                if not Path(str(params[key])).is_file():
                    raise ExtractError(f"the OCR model {params[key]} is missing; reinstall rapidocr")
            _engine = RapidOCR(params=params)
            _engine_threads = threads
        return _engine


def image_key(pixels: np.ndarray) -> str:
    """The cache key of an image: its engine, shape and pixels."""
    digest = hashlib.sha256(ENGINE_ID.encode())
    digest.update(repr(pixels.shape).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def recognize(pixels: np.ndarray) -> str:
    """The text of a BGR image (H x W x 3, uint8: OpenCV's order, as pdfium renders), one
    recognized line per line, top to bottom."""
    engine = _load_engine()
    try:
        result = engine(pixels)
    except Exception as exc:  # noqa: BLE001 - the engine's errors are many and undocumented
        raise ExtractError(f"OCR failed ({type(exc).__name__}: {exc})") from None
    texts = getattr(result, "txts", None) or ()
    boxes = getattr(result, "boxes", None)
    if boxes is None or len(boxes) != len(texts):
        return "\n".join(t for t in texts if t.strip())
    return _reading_order(list(texts), boxes, int(pixels.shape[1]))


_Box = tuple[float, float, float, float, str]  # top, bottom, left, right, text


def _reading_order(texts: list[str], boxes: Any, width: int) -> str:
    """Pieces on one visual line joined by a space, lines top to bottom; on a page of two text
    columns, the left column's lines before the right one's (between full-width pieces such as
    a title), not the two interleaved."""
    items: list[_Box] = []
    for text, box in zip(texts, boxes, strict=True):
        if not text.strip():
            continue
        ys = [float(p[1]) for p in box]
        xs = [float(p[0]) for p in box]
        items.append((min(ys), max(ys), min(xs), max(xs), text.strip()))
    items.sort(key=lambda i: (i[0], i[2]))
    gutter = _gutter(items, width)
    if gutter is None:
        return "\n".join(_lines(items))
    out: list[str] = []
    wide: list[_Box] = []
    left: list[_Box] = []
    right: list[_Box] = []
    for item in items:
        if item[2] < gutter < item[3]:
            if left or right:
                out += _lines(left) + _lines(right)
                left, right = [], []
            wide.append(item)
        else:
            if wide:
                out += _lines(wide)
                wide = []
            (left if item[3] <= gutter else right).append(item)
    out += _lines(wide) + _lines(left) + _lines(right)
    return "\n".join(out)


def _gutter(items: list[_Box], width: int) -> float | None:
    """The x of the gap between two text columns, or None for a page of one column (or a table,
    whose narrow cells leave gaps too: columns of prose are each over a quarter of the page wide)."""
    if len(items) < 8 or width <= 0:
        return None
    best, best_crossing = None, len(items)
    for step in range(30, 71):
        x = width * step / 100
        crossing = sum(1 for i in items if i[2] < x < i[3])
        if crossing < best_crossing:
            best, best_crossing = x, crossing
    if best is None or best_crossing > len(items) // 10:
        return None
    left = [i for i in items if i[3] <= best]
    right = [i for i in items if i[2] >= best]
    if min(len(left), len(right)) < max(4, len(items) // 5):
        return None
    for side in (left, right):
        widths = sorted(i[3] - i[2] for i in side)
        if widths[len(widths) // 2] < width / 4:
            return None
    # Side by side, not one above the other.
    overlap = min(left[-1][1], right[-1][1]) - max(left[0][0], right[0][0])
    shorter = min(left[-1][1] - left[0][0], right[-1][1] - right[0][0])
    return best if shorter > 0 and overlap >= shorter / 2 else None


def _lines(items: list[_Box]) -> list[str]:
    """Pieces grouped into visual lines (a piece joins a line its middle falls within)."""
    lines: list[list[_Box]] = []
    for item in sorted(items, key=lambda i: (i[0], i[2])):
        if lines:
            top, bottom = min(i[0] for i in lines[-1]), max(i[1] for i in lines[-1])
            if top <= (item[0] + item[1]) / 2 <= bottom:
                lines[-1].append(item)
                continue
        lines.append([item])
    return [" ".join(i[4] for i in sorted(line, key=lambda i: i[2])) for line in lines]


def recognize_cached(pixels: np.ndarray, cache: Any) -> str:
    """:func:`recognize`, through *cache* (an :class:`~semsearch.readers.base.OcrCache`, or None)."""
    if cache is None:
        return recognize(pixels)
    key = image_key(pixels)
    known = cache.get(key)
    if known is not None:
        return str(known)
    text = recognize(pixels)
    cache.put(key, text)
    return text


class SqliteOcrCache:
    """An OCR cache in one SQLite file (``ocr-cache.sqlite`` in the index folder).

    Opened lazily by the thread that reads files; a cache that cannot be opened or written is
    left out (OCR still runs), never a reason to fail a run. A cache file that is damaged (not a
    database, a malformed page) is replaced by a new one, once, and ``on_warning`` told in one
    line: left as it was, every later run would recognise every page again.
    """

    def __init__(self, path: Path, on_warning: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_warning = on_warning
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._replaced = False
        self.hits = 0
        self.misses = 0

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._broken:
            try:
                self._conn = self._open()
            except sqlite3.OperationalError:
                self._broken = True  # unreadable, locked, read-only: left out, the file kept
            except sqlite3.DatabaseError as exc:
                self._replace(exc)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            if fresh:
                with contextlib.suppress(OSError):
                    os.chmod(self.path, 0o600)  # it holds the users' text, as the index does
            conn.execute("CREATE TABLE IF NOT EXISTS pages (key TEXT PRIMARY KEY, text TEXT NOT NULL)")
            conn.execute("SELECT count(*) FROM pages WHERE key = ''").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _replace(self, exc: sqlite3.DatabaseError) -> None:
        """Put a new cache in the place of a damaged one (the file only, and only a regular file:
        a link is left alone, and the cache left out)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._replaced:
            self._broken = True
            return
        self._replaced = True
        try:
            if not stat.S_ISREG(os.lstat(self.path).st_mode):
                raise OSError("not a regular file")
            for name in (self.path, self.path.with_name(self.path.name + "-journal")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            self._conn = self._open()
            outcome = "replaced it with a new one"
        except (OSError, sqlite3.Error) as failed:
            self._broken = True
            outcome = f"OCR runs without it ({failed})"
        if self.on_warning is not None:
            self.on_warning(f"damaged OCR cache ({exc}); {outcome}")

    def get(self, key: str) -> str | None:
        conn = self._connect()
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT text FROM pages WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        except sqlite3.DatabaseError as exc:
            self._replace(exc)
            return None
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return str(row[0])

    def put(self, key: str, text: str) -> None:
        conn = self._connect()
        if conn is None:
            return
        try:
            conn.execute("INSERT OR REPLACE INTO pages (key, text) VALUES (?, ?)", (key, text))
        except sqlite3.OperationalError:
            self._broken = True
        except sqlite3.DatabaseError as exc:
            self._replace(exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
