"""Hostile and odd inputs: each is indexed correctly or skipped with a one-line warning and
counted, while the rest of the tree is indexed; queries and output survive odd text too."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import zlib
from pathlib import Path

import pytest
from conftest import FakeModel, make_pdf, write
from typer.testing import CliRunner

from semsearch.cli import app
from semsearch.store import IndexReader

GOOD = "Kingfishers nest in riverbanks and dive for small fish."


def run(*args: str, input: bytes | str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def encrypted_pdf(path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = make_pdf(path.with_suffix(".plain.tmp"), ["secret treasure map"])
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password="hunter2", owner_password="owner")
    with open(path, "wb") as handle:
        writer.write(handle)
    plain.unlink()


def broken_xref_pdf(path: Path) -> None:
    make_pdf(path, ["zebra crossing pelican lighthouse"])
    data = path.read_bytes()
    xref = data.rindex(b"xref")
    path.write_bytes(data[:xref] + b"xref\n0 9\ngarbage garbage\n" + data[xref + 40:].replace(b"startxref", b"startxrex"))


def scanned_pdf(path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 150, style="F")  # a page with only a picture-like shape, no text
    pdf.output(str(path))


def bomb_pdf(path: Path, megabytes: int = 80) -> None:
    """A page whose content stream inflates from ~100 KB to ``megabytes`` MB."""
    comp = zlib.compressobj(9)
    block = b"(A) Tj " * (1 << 17)
    body = b"".join(comp.compress(block) for _ in range(megabytes * (1 << 20) // len(block))) + comp.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    root = tmp_path / "tree"
    write(root / "good.txt", GOOD + "\n")
    write(root / "empty.txt", b"")
    write(root / "whitespace.txt", b"  \n\t\n   \n")
    with open(root / "huge-no-newline.txt", "wb") as handle:  # 50 MB, one line
        block = b"abcdefghij" * 100_000
        for _ in range(50):
            handle.write(block)
    write(root / "latin1.txt", "Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve r\xe9sum\xe9 of the pelican festival.".encode("latin-1"))
    write(root / "utf16.txt", "\ufeffUTF sixteen text mentions the albatross colony.".encode("utf-16-le").replace(b"\xff\xfe\xff\xfe", b"\xff\xfe"))
    write(root / "utf16be.txt", "The narwhal tusk grows in a spiral.".encode("utf-16"))
    write(root / "nul.txt", b"Stray nulls\x00 in the walrus text about tusks.\n" + b"Plain line of text.\n" * 40 + b"\x00end")
    write(root / "nul-heavy.txt", b"Nulls\x00 everywhere\x00 in\x00 this\x00 one.\n" * 20)  # binary: skipped, counted
    write(root / "bad-utf8.txt", b"Mostly fine text about the ocelot \xff\xfe\xc3 with bad bytes.\n" * 5)
    encrypted_pdf(root / "encrypted.pdf")
    broken_xref_pdf(root / "broken-xref.pdf")
    scanned_pdf(root / "scanned.pdf")
    bomb_pdf(root / "bomb.pdf")
    write(root / "not-a-pdf.pdf", b"%PDF-1.7\n" + os.urandom(3000))
    write(root / "truncated.pdf", make_pdf(tmp_path / "t.pdf", ["truncated pdf text"]).read_bytes()[:400])
    (root / "loop").mkdir()
    os.symlink("../loop", root / "loop" / "again")  # a folder link back to its parent
    os.symlink("self", root / "self")  # a link to itself
    os.symlink("nowhere.txt", root / "dangling.txt")
    os.symlink("/etc/hostname", root / "outside.txt")  # leaves the roots: not followed
    os.mkfifo(root / "fifo.txt")
    with contextlib.suppress(OSError):  # not allowed everywhere
        os.mknod(root / "device.txt", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null
    write(root / "name with spaces.txt", "The capybara is the largest rodent.")
    write(root / "new\nline.txt", "The axolotl regrows its limbs.")
    write(root / "ctrl\x1b[31mred\x07.txt", "The okapi lives in the forest.")
    write(root / os.fsdecode(b"latin-\xe9-name.txt"), "The pangolin has scales.")
    deep = root / "deep"
    for _ in range(400):
        deep = deep / "d"
    os.makedirs(deep)
    write(deep / "bottom.txt", "The deepest file talks about the anglerfish.")
    monkeypatch.chdir(tmp_path)
    return root


def test_hostile_tree_is_indexed_with_warnings(tree: Path) -> None:
    result = run("index", "tree")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    err = result.stderr
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("semsearch: indexed")
    for word in ("too large", "symlink loop", "dangling symlink", "not a regular file", "binary"):
        assert word in summary, summary
    warnings = [line for line in err.splitlines() if line.startswith("semsearch: ") and line != summary]
    joined = "\n".join(warnings)
    assert "encrypted.pdf" in joined and "encrypted PDF" in joined
    assert "scanned.pdf" in joined and "no extractable text" in joined
    assert "bomb.pdf" in joined
    assert "not-a-pdf.pdf" in joined and "truncated.pdf" in joined
    assert "dangling.txt" in joined
    assert "2 empty" in summary, summary  # empty.txt and whitespace.txt: counted, quietly (issue 23)
    assert "empty.txt" not in joined and "whitespace.txt" not in joined, joined
    # Every warning is one line (a file name with a newline is escaped in it).
    assert all(line.startswith("semsearch: ") for line in err.strip().splitlines()), err

    with IndexReader(tree.parent / ".semsearch") as reader:
        texts = {os.fsencode(p.name): err for p, _s, _m, err in reader.files()}
    indexed = {k for k, e in texts.items() if e is None}
    expected = {b"good.txt", b"latin1.txt", b"utf16.txt", b"utf16be.txt", b"nul.txt", b"bad-utf8.txt",
                b"name with spaces.txt", b"new\nline.txt", b"ctrl\x1b[31mred\x07.txt", b"latin-\xe9-name.txt",
                b"bottom.txt"}
    assert expected <= indexed, expected - indexed
    # A broken xref table: pypdf may rebuild it (then the PDF is indexed) or give up (a warning).
    assert "broken-xref.pdf" in joined or b"broken-xref.pdf" in indexed
    assert b"huge-no-newline.txt" not in texts and b"fifo.txt" not in texts and b"outside.txt" not in texts

    for query, name in [("kingfishers riverbanks", "good.txt"), ("albatross colony", "utf16.txt"),
                        ("narwhal tusk spiral", "utf16be.txt"), ("walrus stray nulls", "nul.txt"),
                        ("pelican festival resume", "latin1.txt"), ("anglerfish deepest", "bottom.txt"),
                        ("pangolin scales", "latin-")]:
        result = run("query", query, "-k", "1", "--json", "--mode", "lexical")
        assert result.exit_code == 0, result.output
        hit = json.loads(result.stdout)
        assert name in hit["path"], (query, hit["path"])
        if name == "nul.txt":
            assert "\x00" not in hit["text"]
        if name == "latin1.txt":
            assert "Café crème" in hit["text"]

    # Odd names come out escaped on the terminal-style lines and as valid JSON.
    for query in ("axolotl regrows limbs", "okapi forest"):
        result = run("query", query, "-k", "1")
        line = result.stdout
        assert line.count("\n") == 1 and "\x1b" not in line and "\x07" not in line, repr(line)
        result = run("query", query, "-k", "1", "--json")
        assert json.loads(result.stdout)["path"]
    # A second run changes nothing and warns again about the same files only.
    again = run("index", "-q")
    assert again.exit_code == 0, again.output


def test_unreadable_file_is_skipped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   fake_cli: FakeModel) -> None:
    """chmod 000 does not stop root: when running as root the denial is simulated at os.open."""
    write(tmp_path / "tree" / "good.txt", GOOD)
    secret = write(tmp_path / "tree" / "secret.txt", "private words")
    os.chmod(secret, 0)
    if os.geteuid() == 0:
        real_open = os.open

        def deny(path, flags, *args, **kwargs):
            if os.fspath(path).endswith("secret.txt"):
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", deny)
    monkeypatch.chdir(tmp_path)
    result = run("index", "tree")
    assert result.exit_code == 0, result.output
    assert "secret.txt: skipped, unreadable (Permission denied)" in result.stderr
    assert "indexed 1 file" in result.stderr
    os.chmod(secret, 0o600)


def test_file_deleted_or_changed_between_walk_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       fake_cli: FakeModel) -> None:
    import semsearch.indexing.build as indexer

    write(tmp_path / "tree" / "a-good.txt", GOOD)
    write(tmp_path / "tree" / "b-vanishes.txt", "gone soon")
    write(tmp_path / "tree" / "c-changes.txt", "original words about herons")
    write(tmp_path / "tree" / "d-becomes-fifo.txt", "soon a fifo")
    real_walk = indexer.walk

    def racing_walk(*args, **kwargs):
        entries = list(real_walk(*args, **kwargs))
        (tmp_path / "tree" / "b-vanishes.txt").unlink()
        (tmp_path / "tree" / "c-changes.txt").write_text("rewritten words about egrets " * 50)
        (tmp_path / "tree" / "d-becomes-fifo.txt").unlink()
        os.mkfifo(tmp_path / "tree" / "d-becomes-fifo.txt")
        yield from entries

    monkeypatch.setattr(indexer, "walk", racing_walk)
    monkeypatch.chdir(tmp_path)
    result = run("index", "tree")
    assert result.exit_code == 0, result.output
    assert "b-vanishes.txt: skipped, vanished" in result.stderr
    assert "d-becomes-fifo.txt: skipped" in result.stderr
    monkeypatch.setattr(indexer, "walk", real_walk)
    hits = run("query", "egrets rewritten", "-k", "1", "--json")
    assert hits.exit_code == 0 and "c-changes.txt" in json.loads(hits.stdout)["path"]
    # The next run notices the size/mtime it recorded differ from the file's and reads it again.
    again = run("index")
    assert again.exit_code == 0, again.output


def test_symlinks_are_followed_out_of_the_roots_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                fake_cli: FakeModel) -> None:
    write(tmp_path / "elsewhere" / "outside.txt", "The quokka smiles on an island.")
    write(tmp_path / "tree" / "inside.txt", GOOD)
    os.symlink(tmp_path / "elsewhere", tmp_path / "tree" / "link")
    monkeypatch.chdir(tmp_path)
    result = run("index", "tree")
    assert result.exit_code == 0 and "indexed 1 file" in result.stderr, result.output
    assert run("query", "quokka island", "-l").stdout.count("outside.txt") == 0
    result = run("index", "tree", "--follow-symlinks")
    assert result.exit_code == 0 and "indexed 1 file" in result.stderr, result.output
    assert "outside.txt" in run("query", "quokka island", "-l").stdout


def test_queries_odd_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> None:
    write(tmp_path / "tree" / "good.txt", GOOD)
    write(tmp_path / "tree" / "odd.txt", "Bell \x07 and escape \x1b[2J and bidi \u202e txet and the heron.")
    monkeypatch.chdir(tmp_path)
    assert run("index", "tree", "-q").exit_code == 0
    for empty in ("", "   ", "\n\t"):
        result = run("query", empty)
        assert result.exit_code == 2 and "empty query" in result.stderr
    long = " ".join(["kingfishers"] * 5000)
    result = run("query", long, "-k", "1")
    assert result.exit_code == 0, result.output
    assert "reads only the first" in result.stderr
    garbage = (os.urandom(5000) + b"\nkingfishers\n\x00\x00\n\xff\xfe\n" + os.urandom(100)
               + b"\nkingfishers \xe2\x80\xa8 nest \xc2\x85 \x1c dive\n")  # U+2028, NEL, FS: line breaks to some
    result = run("query", "-", input=garbage)
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    result = run("query", "-", "--json", input=garbage)
    lines = result.stdout.splitlines()
    assert any("nest" in json.loads(line)["query"] for line in lines)
    for line in lines:
        json.loads(line)
    result = run("query", "bell escape heron", "-k", "1")
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\u202e" not in result.stdout
    result = run("query", "bell escape heron", "-k", "1", "--json")
    hit = json.loads(result.stdout)
    assert "\x1b[2J" in hit["text"]  # JSON carries the text exactly, escaped by JSON itself
