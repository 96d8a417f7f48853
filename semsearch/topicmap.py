"""The topics as a picture: every passage (or file) a point in 2-D, coloured by its topic, the
topics' names on the map. One self-contained HTML file (the data, script and style inside it: it
works offline, from disk), or a static SVG.

The layout is computed from the stored vectors (:func:`layout`); a map of more than
:data:`MAP_POINTS` points shows a sample of them (every topic keeps its share).
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import InvalidOptionError
from semsearch.output import escape_name, place, shown_path, snippet
from semsearch.search import Hit
from semsearch.topics import SEED, sample_rows, umap_embedding

if TYPE_CHECKING:
    import numpy as np

    from semsearch.store import IndexReader
    from semsearch.topics import Topics

MAP_POINTS = 20_000
MAP_SPREAD = 0.25  # UMAP's min_dist for the map: topics stay apart, their points readable
SNIPPET = 220
# Twenty colours told apart at a glance (Sasha Trubetskoy's list, without white, black and grey),
# the darker first; topics past twenty reuse them.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#469990",
           "#800000", "#808000", "#000075", "#bfef45", "#ffe119", "#fabed4", "#dcbeff", "#aaffc3", "#ffd8b1",
           "#a9a9a9", "#fffac8")  # fmt: skip
FORMATS = (".html", ".htm", ".svg")


def write_map(reader: IndexReader, topics: Topics, path: Path, *, title: str = "Topics", seed: int = SEED) -> int:
    """Draw *topics* to *path* (``.html`` or ``.svg``); the number of points drawn."""
    check_map_path(path)
    suffix = path.suffix.lower()
    data = map_data(reader, topics, title=title, seed=seed)
    text = _svg(data) if suffix == ".svg" else _html(data)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidOptionError(f"cannot write the map to {path}: {exc.strerror}", options=("map",)) from None
    return len(data["x"])


def check_map_path(path: Path) -> None:
    """A map's file name is one this module writes (.html, .htm, .svg), in a folder that exists."""
    if path.suffix.lower() not in FORMATS:
        raise InvalidOptionError(f"--map writes .html or .svg (got {path.name})", options=("map",))
    if not path.parent.is_dir():
        raise InvalidOptionError(f"--map: no folder {path.parent}", options=("map",))


def map_data(reader: IndexReader, topics: Topics, *, title: str, seed: int = SEED) -> dict[str, Any]:
    """What the page draws: each point's place, topic, location (``PATH:LINE``) and snippet; each
    topic's name, size, colour and where its name goes."""
    import numpy as np

    rows = sample_rows(topics.size, MAP_POINTS, seed)
    knn = None
    if topics.graph is not None and topics.graph[1] is not None and np.array_equal(topics.graph[0], rows):
        knn = topics.graph[1]  # the points clustered are the points drawn: their neighbours are known
    xy = layout(topics.vectors[rows], seed, knn)
    records = reader.fetch_chunks(topics.ids[rows].tolist())
    where, snippets = [], []
    for cid in topics.ids[rows].tolist():
        record = records.get(int(cid))
        if record is None:
            where.append("?")
            snippets.append("")
            continue
        hit = Hit(rank=0, score=0.0, chunk=record)
        where.append(escape_name(shown_path(record.path)) if topics.files else place(hit))
        snippets.append(snippet(hit, SNIPPET))
    labels = topics.labels[rows]
    out_topics = []
    for t, topic in enumerate(topics.topics):
        mine = xy[labels == t]
        cx, cy = np.median(mine, axis=0).tolist() if len(mine) else (0.5, 0.5)
        out_topics.append({"id": topic.id, "name": topic.name, "size": topic.size,
                           "color": PALETTE[t % len(PALETTE)], "x": round(cx, 4), "y": round(cy, 4)})  # fmt: skip
    return {
        "title": title,
        "level": "files" if topics.files else "passages",
        "total": topics.size,
        "outliers": topics.outliers,
        "topics": out_topics,
        "x": [round(v, 4) for v in xy[:, 0].tolist()],
        "y": [round(v, 4) for v in xy[:, 1].tolist()],
        "t": [int(v) for v in labels.tolist()],
        "w": where,
        "s": snippets,
    }


def layout(vectors: np.ndarray, seed: int, knn: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Each vector's place on the map, in the unit square: UMAP in two dimensions (what is close
    in meaning is close on the map), scaled so that the outermost 0.5% do not squeeze the rest."""
    import numpy as np

    n = len(vectors)
    if n < 4:
        return np.full((n, 2), 0.5)
    xy = umap_embedding(vectors, 2, seed, knn, min_dist=MAP_SPREAD)
    low, high = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)
    scaled = (xy - low) / np.maximum(high - low, 1e-9)
    return np.clip(scaled, -0.05, 1.05)


def _asset(name: str) -> str:
    return resources.files("semsearch").joinpath(f"topicmap_assets/{name}").read_text(encoding="utf-8")


def _html(data: dict[str, Any]) -> str:
    # JSON inside a script element: "<" escaped, so no text of a passage can end the element.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    page = _asset("map.html")
    parts = {"__TITLE__": html.escape(data["title"]), "__CSS__": _asset("map.css"), "__JS__": _asset("map.js"),
             "__DATA__": payload}  # fmt: skip
    return re.sub("|".join(parts), lambda m: parts[m.group(0)], page)


def _svg(data: dict[str, Any]) -> str:
    size, margin = 1000, 40
    scale = size - 2 * margin
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" font-family="sans-serif">',
           f"<title>{html.escape(data['title'])}</title>", f'<rect width="{size}" height="{size}" fill="white"/>']  # fmt: skip
    radius = 1.6 if len(data["x"]) > 4000 else 2.6
    for x, y, t in zip(data["x"], data["y"], data["t"], strict=True):
        colour = data["topics"][t]["color"] if t >= 0 else "#9aa0a6"
        opacity = 0.85 if t >= 0 else 0.4
        out.append(f'<circle cx="{margin + x * scale:.1f}" cy="{margin + y * scale:.1f}" r="{radius}" '
                   f'fill="{colour}" fill-opacity="{opacity}"/>')  # fmt: skip
    for topic in data["topics"]:
        x, y = margin + topic["x"] * scale, margin + topic["y"] * scale
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" font-size="14" font-weight="600" '
                   f'fill="{topic["color"]}" stroke="white" stroke-width="3" paint-order="stroke">'
                   f"{html.escape(topic['name'])}</text>")  # fmt: skip
    out.append("</svg>")
    return "\n".join(out) + "\n"
