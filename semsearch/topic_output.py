"""Topics as text: the terminal's list, JSON Lines (an object per topic), and a chosen topic's
passages as `query` prints hits (``PATH:LINE:SCORE:SNIPPET``, files with ``-l``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from semsearch.output import (
    escape_name,
    hit_to_json,
    json_text,
    place,
    shown_path,
    snippet,
    write_lines,
    write_raw,
)
from semsearch.search import Hit

if TYPE_CHECKING:
    from semsearch.topics import Topic, Topics

FILES_SHOWN = 5  # files listed per topic on a terminal


def topic_json(topic: Topic, files: bool) -> dict[str, Any]:
    """A topic as JSON: id, name, words, size, its most central passages (or, grouped by file,
    its files), its files with their passages in it, and its subtopics."""
    out: dict[str, Any] = {"topic": topic.id, "name": topic.name, "words": topic.words, "size": topic.size}
    if files:
        out["files"] = [shown_path(path) for path, _ in topic.files]
    else:
        out["passages"] = [_passage(hit) for hit in topic.central_hits()]
        out["files"] = [{"path": shown_path(path), "passages": n} for path, n in topic.files]
    if topic.subtopics:
        out["subtopics"] = [topic_json(sub, files) for sub in topic.subtopics]
    return out


def write_topics_json(out: IO[str], topics: Topics) -> None:
    """One JSON object per topic, largest first, then one for what fits none."""
    for topic in topics.topics:
        out.write(json_text(topic_json(topic, topics.files)) + "\n")
    out.write(json_text({"topic": None, "name": "in no topic", "size": topics.outliers}) + "\n")


def write_topics_text(out: IO[str], topics: Topics, *, terminal: bool = False) -> None:
    """The topics largest first: number, name and size, the central passage, the main files
    (styled on a terminal, as rich allows: NO_COLOR is honoured)."""
    from rich.console import Console
    from rich.text import Text

    unit = "files" if topics.files else "passages"
    lines = [Text(f"{topics.size} {unit}, {len(topics.topics)} topics, {topics.outliers} in none")]
    for topic in topics.topics:
        lines += _topic_lines(topic, topics.files, "", "")
        for sub in topic.subtopics:
            lines += _topic_lines(sub, topics.files, f"{topic.id}.", "    ")
    if terminal:
        console = Console(file=out, highlight=False, soft_wrap=True)
        for line in lines:
            console.print(line)
    else:
        out.write("".join(line.plain + "\n" for line in lines))


def _topic_lines(topic: Topic, files: bool, prefix: str, indent: str) -> list[Any]:
    from rich.text import Text

    head = Text(f"\n{indent}")
    head.append(f"{prefix}{topic.id}. {escape_name(topic.name)}", style="bold")
    head.append(f"  ({topic.size})", style="dim")
    lines = [head]
    if topic.central and not files:
        hit = Hit(rank=1, score=0.0, chunk=topic.central[0])
        line = Text(f"{indent}   ")
        line.append(place(hit), style="magenta")
        line.append(f"  {snippet(hit, 100)}")
        lines.append(line)
    shown = topic.files[:FILES_SHOWN]
    names = ", ".join(escape_name(shown_path(path)) + ("" if files else f" ({n})") for path, n in shown)
    more = f", +{len(topic.files) - len(shown)} more" if len(topic.files) > len(shown) else ""
    lines.append(Text(f"{indent}   {names}{more}", style="dim"))
    return lines


def find_topic(topics: Topics, number: str) -> Topic | None:
    """The topic numbered *number* (``3``, or ``3.2`` for a subtopic)."""
    head, _, tail = number.partition(".")
    for topic in topics.topics:
        if str(topic.id) == head:
            if not tail:
                return topic
            return next((sub for sub in topic.subtopics if str(sub.id) == tail), None)
    return None


def write_topic_members(out: IO[str], topic: Topic, hits: Iterable[Hit], *, files: bool, as_json: bool,
                        null: bool = False) -> None:  # fmt: skip
    """A topic's passages (*hits*, most central first) as `query` prints hits, or with *files*
    its files, most passages first."""
    if files:
        if as_json:
            for path, n in topic.files:
                out.write(json_text({"path": shown_path(path), "passages": n}) + "\n")
        else:
            end = "\0" if null else "\n"
            write_raw(
                out, "".join((shown_path(p) if null else escape_name(shown_path(p))) + end for p, _ in topic.files)
            )
        return
    for hit in hits:
        if as_json:
            out.write(json_text({**_passage(hit), "topic": topic.id}) + "\n")
        else:
            write_lines(out, [hit])


def _passage(hit: Hit) -> dict[str, Any]:
    """A passage as `query --json` gives a hit, its score the cosine to the topic's centre."""
    out = hit_to_json(hit, "")
    del out["query"], out["scores"]
    return out
