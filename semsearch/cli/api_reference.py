"""The Python API reference (docs/api.md), made from the package itself: the signatures as the
source writes them, the docstrings, and each dataclass's fields with their comments, so the
reference cannot say what the code does not. A test fails when the file is stale; make it again
with::

    python -m semsearch.cli.api_reference > docs/api.md

It lives beside :mod:`semsearch.cli.reference` (the command-line reference) in the top layer,
the one that may import every other.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

WIDTH = 100

INTRO = """\
# Python API reference

Made from the package's signatures and docstrings by
`python -m semsearch.cli.api_reference > docs/api.md`; a test fails when it is out of date.
The command line is a thin layer over this API ([cli.md](cli.md)); the guides by task are
linked from [README.md](../README.md#guides).

```python
from semsearch import Index

with Index.create("notes/.semsearch", exist_ok=True, on_note=print) as index:
    summary = index.update(["notes"])  # embeds only what changed
    for hit in index.search("how long are old log files kept", k=3, types=["md"]):
        print(f"{hit.score:.3f} {hit.chunk.path}:{hit.chunk.line_start}")
```

- Everything the command line does is a method of one object, [`Index`](#index). The package
  is typed (`py.typed`); `import semsearch` is cheap: each name is imported on first use.
- [`Index.open`](#indexopen) finds an index as the CLI does; [`Index.create`](#indexcreate)
  makes a new one (settings left `None` keep an existing index's own);
  [`Index.for_update`](#indexfor_update) is the index `semsearch index` writes.
- The library never prints: [`Index.update`](#indexupdate) reports progress and warnings
  as [`IndexEvent`](#indexevent)s to `on_event`, and notes (such as the one-time ONNX export
  of a new model, tens of seconds on its first update) go to `on_note` (`on_note=print` to
  see them).
- Searches may run from several threads at once; one update runs at a time (a lock guards
  the index across processes too).
- `similar`, `duplicates`, `topics`, `topic_hits` and `topic_map` read only the index: no
  model is loaded. Topics need `pip install 'semsearch[topics]'`.
- Errors are [`SemsearchError`](#semsearcherror) subclasses with structured fields:
  `options` (the arguments at fault), `path`, `remedy`.
- Seams: a model registered under a name, a file format added as a reader, a vector engine
  as a backend ([Seams](#seams); [ARCHITECTURE.md](../ARCHITECTURE.md#seams)).
"""


@dataclass(frozen=True)
class Entry:
    """A class to document: where it is, what it is called publicly, which members to show."""

    module: str
    name: str
    members: tuple[str, ...] = ()
    title: str = ""  # the heading's text (default: the name)
    all_public: bool = False  # every public member must be listed (a new one fails the build)
    fields: bool = True  # a dataclass's fields

    @property
    def heading(self) -> str:
        return self.title or self.name


@dataclass(frozen=True)
class Section:
    """A part of the page: a heading, a sentence, and its entries (classes or functions)."""

    title: str
    lead: str
    entries: tuple[Entry, ...] = field(default_factory=tuple)


INDEX_MEMBERS = (
    "open", "create", "for_update", "update", "merge", "watch", "copy_from",
    "search", "search_many", "similar", "duplicates", "topics", "topic_hits", "topic_map", "evaluate",
    "status", "manifest", "base_folder", "engine", "load_model", "what_an_interruption_leaves", "close",
)  # fmt: skip

ERRORS = (
    "SemsearchError", "IndexNotFoundError", "IndexCorruptError", "IndexVersionError", "IndexOutdatedError",
    "IndexLockedError", "IndexExistsError", "InvalidOptionError", "ModelError", "ModelOptionError", "ExtractError",
)  # fmt: skip

SECTIONS = (
    Section(
        "The index",
        "One object owns an index's whole life: `from semsearch import Index`.",
        (
            Entry("semsearch.api", "Index", INDEX_MEMBERS, all_public=True, fields=False),
            Entry("semsearch.index_settings", "IndexSettings"),
        ),
    ),
    Section(
        "What a search returns",
        "`Index.search`, `similar` and `topic_hits` return hits; each holds the stored chunk.",
        (
            Entry("semsearch.search", "Hit"),
            Entry("semsearch.store.reader", "ChunkRecord", ("part_of_line",)),
            Entry("semsearch.search", "SearchOptions", ("validate",)),
            Entry("semsearch.scope", "Scope", ("make",)),
        ),
    ),
    Section(
        "What an update reports",
        "`Index.update` returns a summary and reports progress as events.",
        (
            Entry("semsearch.indexing.options", "IndexSummary", title="IndexSummary (also `UpdateSummary`)"),
            Entry("semsearch.indexing.options", "IndexEvent", ("message",)),
            Entry("semsearch.indexing.options", "Tuning"),
            Entry("semsearch.status", "IndexStatus", ("to_dict",)),
        ),
    ),
    Section(
        "Duplicates, topics, evaluation",
        "What `Index.duplicates`, `Index.topics` and `Index.evaluate` return.",
        (
            Entry("semsearch.duplicates", "Duplicates"),
            Entry("semsearch.duplicates", "DuplicateGroup", ("files",)),
            Entry("semsearch.duplicates", "FilePair", ("share",)),
            Entry("semsearch.topics", "Topics", ("size", "outlier_ids")),
            Entry("semsearch.topics", "Topic", ("central_hits",)),
            Entry("semsearch.evalrun", "EvalResult", ("latency", "summary")),
        ),
    ),
    Section(
        "Errors",
        "Every error the library raises is a `SemsearchError`; `str(error)` is one line for the user.",
        tuple(Entry("semsearch.errors", name, fields=False) for name in ERRORS),
    ),
    Section(
        "Seams",
        "Where a model, a file format, a vector engine or another executor plugs in.",
        (
            Entry("semsearch.models", "register_model", title="semsearch.models.register_model"),
            Entry("semsearch.readers", "register_reader", title="semsearch.readers.register_reader"),
            Entry("semsearch.readers.base", "Reader", title="semsearch.readers.Reader"),
            Entry("semsearch.vectors", "register_backend", title="semsearch.vectors.register_backend"),
            Entry(
                "semsearch.indexing.cluster",
                "RayExecutor",
                ("__init__",),
                title="semsearch.indexing.cluster.RayExecutor",
                fields=False,
            ),
        ),
    ),
)


def markdown() -> str:
    """The reference as Markdown: the intro, then each section's classes and functions."""
    parts = [INTRO.rstrip("\n")]
    parts.append("\n## Contents\n")
    for section in SECTIONS:
        names = ", ".join(f"[`{e.name}`](#{slug(e.heading)})" for e in section.entries)
        parts.append(f"- [{section.title}](#{slug(section.title)}): {names}")
    for section in SECTIONS:
        parts += [f"\n## {section.title}\n", section.lead]
        for entry in section.entries:
            parts.append("")
            parts.extend(_entry(entry))
    return "\n".join(parts) + "\n"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces as ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _entry(entry: Entry) -> Iterator[str]:
    obj = getattr(importlib.import_module(entry.module), entry.name)
    yield f"### {entry.heading}"
    yield ""
    if not inspect.isclass(obj):
        yield from _function_block(obj, entry.name)
        return
    yield f"`{entry.module}.{entry.name}`" + _bases(obj)
    yield ""
    yield _doc(obj, entry.name)
    if entry.fields:
        lines = list(_fields(obj))
        if lines:
            yield ""
            yield "Fields:"
            yield ""
            yield from lines
    if entry.all_public:
        missing = sorted(set(_public_members(obj)) - set(entry.members))
        if missing:
            raise AssertionError(f"{entry.name}: public members not in the reference: {', '.join(missing)}")
    for member in entry.members:
        yield ""
        yield f"#### {entry.name}.{member}" if member != "__init__" else f"#### {entry.name}()"
        yield ""
        yield from _function_block(_member(obj, member), f"{entry.name}.{member}")


def _bases(cls: type) -> str:
    bases = [b.__name__ for b in cls.__bases__ if b is not object and not b.__name__.startswith("_")]
    own = [b for b in bases if b != "IndexQueries"]
    return f" (a subclass of {', '.join(f'`{b}`' for b in own)})" if own else ""


def _public_members(cls: type) -> Iterator[str]:
    for klass in cls.__mro__:
        if klass is not object:
            for name, value in vars(klass).items():
                if not name.startswith("_") and (callable(value) or isinstance(value, (property, classmethod))):
                    yield name


def _member(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    raise AttributeError(f"{cls.__name__} has no member {name}")


def _function_block(obj: Any, shown: str) -> Iterator[str]:
    """A function's (method's, property's) signature from its source, then its docstring."""
    kind = ""
    if isinstance(obj, property):
        kind, obj = "property", obj.fget
    elif isinstance(obj, (classmethod, staticmethod)):
        kind, obj = type(obj).__name__, obj.__func__
    node = _parse(obj)
    yield "```python"
    yield _signature(node, shown, kind, vars(sys.modules[obj.__module__]))
    yield "```"
    yield ""
    yield _doc(obj, shown)


def _parse(obj: Callable[..., Any]) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef), node
    return node


def _signature(node: ast.FunctionDef, shown: str, kind: str, names: dict[str, Any]) -> str:
    """``Name(params) -> returns`` as the source writes it (one parameter a line when long)."""
    a = node.args
    params: list[str] = []
    positional = a.posonlyargs + a.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        if i == 0 and arg.arg in ("self", "cls"):
            continue
        params.append(_param(arg, default, names))
        if a.posonlyargs and arg is a.posonlyargs[-1]:
            params.append("/")
    if a.vararg is not None:
        params.append("*" + _param(a.vararg, None, names))
    elif a.kwonlyargs:
        params.append("*")
    params += [_param(arg, default, names) for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg is not None:
        params.append("**" + _param(a.kwarg, None, names))
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None and node.name != "__init__" else ""
    if kind == "property":
        return f"{shown}{returns}  # property"
    name = shown.removesuffix(".__init__")
    one_line = f"{name}({', '.join(params)}){returns}"
    if len(one_line) <= WIDTH - 4 or not params:
        return one_line
    inner = "".join(f"    {p},\n" for p in params)
    return f"{name}(\n{inner}){returns}"


def _param(arg: ast.arg, default: ast.expr | None, names: dict[str, Any]) -> str:
    text = arg.arg
    if arg.annotation is not None:
        text += f": {ast.unparse(arg.annotation)}"
    if default is not None:
        text += (" = " if arg.annotation is not None else "=") + _value(default, names)
    return text


def _value(node: ast.expr, names: dict[str, Any]) -> str:
    """A default as the source writes it, a module constant as its value (``DEFAULT_MODE``:
    ``'hybrid'``), so the reader sees the number or word."""
    if isinstance(node, ast.Name) and type(names.get(node.id)) in (int, float, str, bool):
        return repr(names[node.id])
    return ast.unparse(node)


def _fields(cls: type) -> Iterator[str]:
    """Each field of a dataclass as ``name: type = default``, with the comments the source
    writes on its line and just above it."""
    import dataclasses

    if not dataclasses.is_dataclass(cls):
        return
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef)
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        name = stmt.target.id
        if name.startswith("_"):
            continue
        text = f"{name}: {ast.unparse(stmt.annotation)}"
        if stmt.value is not None:
            text += f" = {_value(stmt.value, vars(sys.modules[cls.__module__]))}"
        last = lines[(stmt.end_lineno or stmt.lineno) - 1]
        comment = " ".join(_comments_above(lines, stmt.lineno - 1) + _comment_after(last))
        yield f"- `{text}`" + (f": {_inline(comment)}" if comment else "")


def _comments_above(lines: list[str], index: int) -> list[str]:
    found: list[str] = []
    i = index - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        found.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    return found


def _comment_after(line: str) -> list[str]:
    """The comment that ends a line of code (a ``#`` outside quotes), if any."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = line[i + 1 :].strip()
            return [comment] if comment and not comment.startswith("fmt:") else []
    return []


def _doc(obj: Any, shown: str) -> str:
    if inspect.isclass(obj):  # its own, from the source (a dataclass without one gets its signature)
        node = ast.parse(textwrap.dedent(inspect.getsource(obj))).body[0]
        assert isinstance(node, ast.ClassDef)
        doc = ast.get_docstring(node)
    else:
        doc = inspect.getdoc(obj)
    if not doc:
        raise AssertionError(f"{shown} has no docstring: the reference needs one")
    return _inline(doc)


_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc):`~?([^`]+)`")


def _inline(text: str) -> str:
    """reST inline markup as Markdown: roles and double backticks become code spans."""
    text = _ROLE.sub(r"`\1`", text)
    return text.replace("``", "`")


if __name__ == "__main__":
    sys.stdout.write(markdown())
