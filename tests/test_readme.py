"""The README's Python API example runs as written, with the real bundled model."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "the README's Python API section has no python example"
    return match.group(1)


@pytest.mark.model
def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_python_example(), "README.md", "exec"), {"__name__": "readme_example"})
    lines = printed.getvalue().splitlines()
    assert lines[0] == "2 files, 2 chunks"
    assert lines[1].split()[1].startswith("logging.md:")  # the passage about keeping logs ranks first
    assert lines[3] == "ship a new release -> deploy.md"
    assert lines[4] == "deploy.md"  # the filtered search
    assert lines[5] == "['logging.md']"  # the only other file is the one like it
    assert lines[6] == "2 chunks indexed"
    assert (tmp_path / "notes" / ".semsearch" / "manifest.json").is_file()


def test_the_package_exports_its_api() -> None:
    import semsearch

    for name in semsearch.__all__:
        assert getattr(semsearch, name) is not None
    from semsearch import Index  # noqa: F401
