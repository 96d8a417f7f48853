"""Text for people about an index: the summary line of `index`, the lines of `status`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from semsearch.indexing import IndexSummary
    from semsearch.status import IndexStatus


def summary_line(s: IndexSummary) -> str:
    skipped = sum(s.skipped.values())
    parts = [
        f"indexed {s.indexed} file{'' if s.indexed == 1 else 's'}",
        f"{s.unchanged} unchanged",
        f"{s.removed} removed",
    ]
    skip_text = f"skipped {skipped}"
    if skipped:
        skip_text += " (" + ", ".join(f"{n} {reason}" for reason, n in s.skipped.most_common()) + ")"
    parts.append(skip_text)
    if s.no_text:
        parts.append(f"{s.no_text} without text")
    reused = f" ({s.chunks_reused} reused, not embedded again)" if s.chunks_reused else ""
    parts.append(f"chunks: +{s.chunks_added}{reused} -{s.chunks_removed} = {s.chunks_total}")
    if s.pages_ocr:
        cached = f", {s.pages_ocr_cached} from the cache" if s.pages_ocr_cached else ""
        rate = s.pages_ocr / s.ocr_seconds if s.ocr_seconds > 0 else 0.0
        parts.append(f"OCR: {s.pages_ocr} page{'' if s.pages_ocr == 1 else 's'}{cached} ({rate:.2f}/s)")
    parts.append(f"{s.seconds:.1f} s")
    return "semsearch: " + ", ".join(parts)


def status_lines(st: IndexStatus) -> list[tuple[str, str]]:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.updated_at))
    ago = _ago(time.time() - st.updated_at)
    walk, chunking = st.walk, st.chunking
    changed, missing, new = st.changed_since or 0, st.missing_since or 0, st.new_since or 0
    return [
        ("index", st.database or str(st.index)),
        (
            "model",
            f"{st.model} ({st.dim}-d, {st.precision or 'fp32'}, {st.model_fingerprint[:19]}…)"
            + (f" at {st.model_endpoint}" if st.model_endpoint else ""),
        ),
        ("files", f"{st.files}" + (f" ({st.files_without_text} without text)" if st.files_without_text else "")),
        (
            "chunks",
            f"{st.chunks} ({chunking['chunk_tokens']} tokens, {chunking['overlap_tokens']} overlap, "
            f"context {'on' if chunking['context'] else 'off'})",
        ),
        (
            "walk",
            f"hidden files {'in' if walk['hidden'] else 'out'}, files up to {human_bytes(walk['max_file_size'])}, "
            f"links out of the folders {'followed' if walk['follow_symlinks'] else 'not followed'}",
        ),
        (
            "reading",
            f"OCR {walk['ocr']} ({_OCR_MEANING.get(walk['ocr'], '')}), notebook outputs "
            f"{'in' if walk['notebook_outputs'] else 'out'}",
        ),
        (
            "size",
            human_bytes(st.disk_bytes)
            + (
                f" (vectors in {st.vector_segments} segments, {st.vector_tombstones} removed not yet merged)"
                if st.vector_segments > 1 or st.vector_tombstones
                else ""
            ),
        ),
        ("updated", f"{when} ({ago} ago)"),
        (
            "changed",
            f"{changed} changed, {missing} missing and {new} new on disk since"
            + (" (run `semsearch index`)" if changed or missing or new else ""),
        ),
        ("roots", ", ".join(st.roots) or "-"),
        *([("verified", "ok: database, vector checksums and links" if not st.problems else "DAMAGED")]
          if st.problems is not None else []),
    ]  # fmt: skip


_OCR_MEANING = {"off": "no OCR", "auto": "PDF pages without text", "images": "PDF pages without text and images"}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} days"
