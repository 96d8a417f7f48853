"""`semsearch topics`: what the indexed passages (or files) are about, as named groups, and a map."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from semsearch.cli import console
from semsearch.cli import options as opt
from semsearch.errors import InvalidOptionError

_DEPTH = typer.Option(1, "--depth", min=1, max=2, help="2: each topic split into subtopics.")
_MIN_SIZE = typer.Option(
    None, "--min-size", min=2, help="The fewest passages (files) of a topic [default: about 1 in 100, 5 to 100]."
)
_SEED = typer.Option(None, "--seed", help="Seed of the random choices (the same seed gives the same topics).")
_MAP = typer.Option(
    None, "--map", metavar="FILE", help="Also draw the topics: FILE.html (a page that works offline) or FILE.svg."
)
_TOPIC = typer.Option(
    None,
    "--topic",
    metavar="N",
    help="Print topic N's passages (N.M: a subtopic's), most central first, as query prints hits "
    "(PATH:LINE:SCORE:SNIPPET; --json: JSON Lines). With -l the topics are of files, and topic N's files are printed.",
)


def topics(
    paths: list[Path] = opt.SCOPE_PATHS,
    files_only: bool = typer.Option(False, "-l", "--files-only", help="Group files (by their passages' mean)."),
    depth: int = _DEPTH,
    min_size: int | None = _MIN_SIZE,
    topic: str | None = _TOPIC,
    map_file: Path | None = _MAP,
    seed: int | None = _SEED,
    globs: list[str] = opt.GLOB,
    types: list[str] = opt.TYPE,
    types_not: list[str] = opt.TYPE_NOT,
    changed_within: str | None = opt.CHANGED_WITHIN,
    changed_before: str | None = opt.CHANGED_BEFORE,
    as_json: bool = typer.Option(False, "--json", help="JSON Lines: one object per topic, largest first."),
    null: bool = opt.NULL,
    index: str | None = opt.INDEX,
) -> None:
    """Group the indexed passages (-l: files) into topics, largest first, each named by the words
    that set it apart, with its central passage and main files; passages that fit no topic are
    counted apart. Read from the stored vectors: no model is loaded. Only files under the PATHs,
    when given.

    Exit status: 0 when topics were found, 1 when none were, 2 on an error (one line on stderr)."""
    from semsearch import topic_output
    from semsearch.api import Index
    from semsearch.scope import scope_of
    from semsearch.topicmap import check_map_path
    from semsearch.topics import default_min_size

    def run() -> bool:
        if null and not (files_only and topic):
            raise InvalidOptionError("-0/--null goes with -l and --topic (a list of files)")
        if map_file is not None:
            check_map_path(map_file)  # before minutes of work, not after
        scope = scope_of(paths, globs, types, types_not, changed_within, changed_before)
        out = sys.stdout
        with Index.open(index, on_note=console.note_printer(console.stderr())) as opened:
            found = opened.topics(files=files_only, min_size=min_size, depth=depth, seed=seed, scope=scope)
            if map_file is not None:
                drawn = opened.topic_map(found, map_file, title=f"Topics of {opened.base_folder().name or 'the index'}")
                console.stderr().print(f"semsearch: map of {drawn} points written to {map_file}", markup=False)
            if topic is not None:
                chosen = topic_output.find_topic(found, topic)
                if chosen is None:
                    raise InvalidOptionError(f"no topic {topic} (there are {len(found.topics)})")
                hits = () if files_only else opened.topic_hits(chosen)
                topic_output.write_topic_members(out, chosen, hits, files=files_only, as_json=as_json, null=null)
                return True
        if not found.topics and found.size and min_size is None:
            unit = "files" if files_only else "passages"
            console.stderr().print(f"semsearch: {found.size} {unit} make no topic of {default_min_size(found.size)} "
                                   "or more: try --min-size 2", markup=False)  # fmt: skip
        if as_json:
            topic_output.write_topics_json(out, found)
        else:
            topic_output.write_topics_text(out, found, terminal=out.isatty())
        return bool(found.topics)

    console.answer(run)
