"""Write each BEIR SciFact corpus document to its own text file.

Usage:
    python benchmarks/quality/scifact_to_files.py [--corpus PATH/corpus.jsonl] OUT_DIR

Each document becomes ``OUT_DIR/<_id>.txt`` holding the title, a blank line and
the text (UTF-8, LF line ends, newline at end; title and text are stripped of
surrounding whitespace). Files whose content is already identical are left
untouched, so re-running does not change their mtimes. Changed files are
written atomically (temporary file + rename).

Exit codes: 0 ok, 1 malformed corpus, 2 corpus file missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "shared/data/scifact/corpus.jsonl"


def render(title: str, text: str) -> bytes:
    """File content for one document: title, blank line, text, final newline."""
    return f"{title.strip()}\n\n{text.strip()}\n".encode()


def write_if_changed(path: Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` unless it already holds exactly that. Returns True if written."""
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:  # plain open: normal umask permissions
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _safe_id(doc_id: object) -> str | None:
    """Return ``doc_id`` as a string usable as a file name stem, else None."""
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id or doc_id in (".", ".."):
        return None
    if any(c in doc_id for c in "/\\\0") or doc_id != doc_id.strip():
        return None
    return doc_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write each SciFact corpus document to OUT_DIR/<_id>.txt (title, blank line, text)."
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS,
        help=f"BEIR corpus.jsonl (default: {DEFAULT_CORPUS})",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write the .txt files to")
    args = parser.parse_args(argv)

    corpus: Path = args.corpus
    if not corpus.is_file():
        print(
            f"error: SciFact corpus not found at {corpus}\n"
            "  Expected BEIR SciFact corpus.jsonl (see ../shared/data/README.md); pass --corpus PATH.",
            file=sys.stderr,
        )
        return 2

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    written = unchanged = 0
    seen: set[str] = set()
    with corpus.open(encoding="utf-8-sig", newline="") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{corpus}:{line_no}"
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                print(f"error: {where}: invalid JSON ({exc.msg})", file=sys.stderr)
                return 1
            if not isinstance(doc, dict):
                print(f"error: {where}: expected a JSON object", file=sys.stderr)
                return 1
            doc_id = _safe_id(doc.get("_id"))
            title, text = doc.get("title", ""), doc.get("text")
            if doc_id is None:
                print(f"error: {where}: missing or unsafe '_id' {doc.get('_id')!r}", file=sys.stderr)
                return 1
            if not isinstance(title, str) or not isinstance(text, str):
                print(f"error: {where}: 'title'/'text' must be strings", file=sys.stderr)
                return 1
            if doc_id in seen:
                print(f"error: {where}: duplicate _id {doc_id!r}", file=sys.stderr)
                return 1
            seen.add(doc_id)
            if write_if_changed(out_dir / f"{doc_id}.txt", render(title, text)):
                written += 1
            else:
                unchanged += 1

    print(f"{written + unchanged} documents in {out_dir} ({written} written, {unchanged} unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
