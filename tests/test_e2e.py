"""End to end with the real bundled model, real files, the installed console script, real pipes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_pdf, write

from semsearch.store import IndexReader

pytestmark = pytest.mark.model

BIN = Path(sys.executable).parent


def semsearch_cmd() -> list[str]:
    script = BIN / "semsearch"
    if script.exists():
        return [str(script)]
    found = shutil.which("semsearch")
    return [found] if found else [sys.executable, "-m", "semsearch"]


def run(args: list[str], cwd: Path, env: dict[str, str], input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(semsearch_cmd() + args, cwd=cwd, env=env, input=input, capture_output=True, timeout=900)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("e2e")
    docs = root / "docs"
    write(docs / "tls.md", "# Serving over HTTPS\n\nTo enable HTTPS, obtain a TLS certificate from a certificate "
          "authority such as Let's Encrypt, then point the server's ssl_certificate and ssl_certificate_key "
          "settings at the certificate chain and the private key. Renew certificates before they expire.\n")
    write(docs / "baking.md", "# Sourdough\n\nMix flour, water and starter. Let the dough ferment overnight, "
          "shape the loaf, and bake it in a preheated Dutch oven for forty minutes.\n")
    write(docs / "src" / "retry.py", "import time\n\n\ndef call_with_backoff(func, attempts=5, base_delay=0.5):\n"
          "    \"\"\"Call func, retrying failures with exponentially growing waits between attempts.\"\"\"\n"
          "    for attempt in range(attempts):\n        try:\n            return func()\n"
          "        except ConnectionError:\n            time.sleep(base_delay * 2 ** attempt)\n"
          "    raise RuntimeError('all retries failed')\n")
    make_pdf(docs / "biology.pdf", [
        "Chapter 1. Cells are the basic units of life. Every organism is made of one or more cells.",
        "Chapter 2. Photosynthesis: plants capture energy from sunlight in their chloroplasts and use it "
        "to turn carbon dioxide and water into glucose and oxygen.",
    ])
    write(docs / "image.bin", bytes(range(256)) * 64)
    write(docs / "legacy.txt", b"Caf\xe9 menu: cr\xe8me br\xfbl\xe9e and tarte tatin for dessert, served with espresso.\n")
    write(docs / "broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n")
    env = {**os.environ, "SEMSEARCH_CACHE": str(root / "cache"), "NO_COLOR": "1"}
    env.pop("SEMSEARCH_INDEX", None)
    result = run(["index", "docs"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return root, env, result


def test_index_reports_skips_and_problems(corpus) -> None:
    _, _, result = corpus
    err = result.stderr.decode()
    assert result.stdout == b""
    assert "indexed 5 files" in err, err
    assert "1 binary" in err
    assert "broken.pdf" in err and "broken PDF" in err


@pytest.mark.parametrize(
    "question,expected",
    [
        ("how do I set up HTTPS certificates for my web server", "docs/tls.md"),
        ("retry a failed network call with increasing delays", "docs/src/retry.py"),
        ("how do plants turn sunlight into energy", "docs/biology.pdf"),
        ("what sweet things are on the dessert menu", "docs/legacy.txt"),
        ("bread recipe with long fermentation", "docs/baking.md"),
    ],
)
def test_right_file_ranks_first(corpus, question: str, expected: str) -> None:
    root, env, _ = corpus
    result = run(["query", question, "--json", "-k", "3"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr.decode()
    hits = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert hits[0]["path"] == expected, hits
    assert 0 < hits[0]["score"] <= 1.0


def test_pdf_hit_carries_its_page(corpus) -> None:
    root, env, _ = corpus
    result = run(["query", "chloroplasts glucose oxygen", "--json", "-k", "1"], cwd=root, env=env)
    hit = json.loads(result.stdout.decode().splitlines()[0])
    assert hit["path"] == "docs/biology.pdf" and hit["page"] == 2


def test_real_pipe_head_ends_quietly(corpus) -> None:
    root, env, _ = corpus
    cmd = " ".join(f"'{c}'" for c in semsearch_cmd())
    shell = subprocess.run(
        f"{cmd} query 'dessert menu' -k 50 | head -1; echo \"rc=${{PIPESTATUS[0]}}\"",
        shell=True, executable="/bin/bash", cwd=root, env=env, capture_output=True, timeout=300,
    )
    out = shell.stdout.decode().splitlines()
    assert out[0].startswith("docs/legacy.txt:1:"), out
    assert out[1] == "rc=0"
    assert shell.stderr == b"", shell.stderr.decode()


def test_files_only_null_into_xargs(corpus) -> None:
    root, env, _ = corpus
    cmd = " ".join(f"'{c}'" for c in semsearch_cmd())
    shell = subprocess.run(f"{cmd} query 'web server certificates' -l -0 -k 2 | xargs -0 wc -c",
                           shell=True, cwd=root, env=env, capture_output=True, timeout=300)
    assert shell.returncode == 0 and "docs/tls.md" in shell.stdout.decode().splitlines()[0]


def test_query_path_imports_no_torch_and_embeds_only_the_query(corpus) -> None:
    root, env, _ = corpus
    probe = (
        "import sys\n"
        "from semsearch.models.onnx_runtime import OnnxEmbedder\n"
        "def refuse(*a, **k): raise AssertionError('a document was embedded at query time')\n"
        "OnnxEmbedder.embed_documents = refuse\n"
        "from semsearch.cli import main\n"
        "sys.argv = ['semsearch', 'query', 'sourdough starter', '--json', '-k', '1']\n"
        "try:\n    main(fast_exit=False)\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'pypdf', 'lxml', 'docx', 'pptx',\n"
        "    'odf', 'striprtf', 'selectolax', 'PIL', 'rapidocr', 'cv2', 'pypdfium2', 'ray', 'pyarrow', 'psycopg',\n"
        "    'starlette', 'uvicorn', 'mcp', 'httpx', 'sklearn', 'scipy', 'umap', 'numba') if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}) if (json := __import__('json')) else '', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, timeout=300)
    report = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, result.stderr.decode()
    assert json.loads(result.stdout.decode())["path"] == "docs/baking.md"


def test_a_reader_without_the_export_makes_it_once(corpus, tmp_path: Path) -> None:
    """A reader who never ran `index` on this machine (a team index's reader, a cleared cache):
    its first query makes the ONNX export; later ones run without torch."""
    root, env, _ = corpus
    env = {**env, "SEMSEARCH_CACHE": str(tmp_path / "fresh-cache")}
    first = run(["query", "sourdough starter", "-l", "-k", "1"], cwd=root, env=env)
    assert first.returncode == 0 and first.stdout.decode().strip() == "docs/baking.md", first.stderr.decode()
    assert "exporting the model to ONNX" in first.stderr.decode()
    second = run(["query", "sourdough starter", "-l", "-k", "1"], cwd=root, env=env)
    assert second.returncode == 0 and second.stdout.decode().strip() == "docs/baking.md"
    assert "ONNX" not in second.stderr.decode() and "sentence-transformers" not in second.stderr.decode()


def test_batch_mode_loads_model_once(corpus) -> None:
    root, env, _ = corpus
    queries = b"https certificate renewal\nexponential backoff\n\xff\xfe garbage \x00 bytes\n"
    result = run(["query", "-", "--json", "-k", "1"], cwd=root, env=env, input=queries)
    assert result.returncode == 0, result.stderr.decode()
    hits = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [h["path"] for h in hits[:2]] == ["docs/tls.md", "docs/src/retry.py"]
    assert len(hits) == 3


def test_query_output_is_whole_when_the_process_ends_early(corpus, tmp_path: Path) -> None:
    root, env, _ = corpus
    # A query ends with os._exit after flushing: every hit must reach a pipe and a file.
    piped = run(["query", "dessert menu", "--json", "-k", "50"], cwd=root, env=env)
    assert piped.returncode == 0, piped.stderr.decode()
    hits = [json.loads(line) for line in piped.stdout.decode().splitlines()]
    assert len(hits) == min(50, _chunk_count(root)) > 1
    out = tmp_path / "hits.jsonl"
    with open(out, "wb") as handle:
        to_file = subprocess.run([*semsearch_cmd(), "query", "dessert menu", "--json", "-k", "50"], cwd=root,
                                 env=env, stdout=handle, stderr=subprocess.PIPE, timeout=300)
    assert to_file.returncode == 0 and out.read_bytes() == piped.stdout


def _chunk_count(root: Path) -> int:
    with IndexReader(root / ".semsearch") as reader:
        return sum(1 for _ in reader.chunks())


def test_exit_codes(corpus) -> None:
    root, env, _ = corpus
    assert run(["query", "anything", "--min-score", "0.99"], cwd=root, env=env).returncode == 1
    bad = run(["query", "anything", "--index", str(root / "nowhere")], cwd=root, env=env)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_incremental_reindex_with_real_model(corpus) -> None:
    root, env, _ = corpus
    again = run(["index", "docs"], cwd=root, env=env)
    # 5 indexed + the broken PDF, remembered so that it is not re-read every run
    assert "indexed 0 files, 6 unchanged" in again.stderr.decode(), again.stderr.decode()
    write(root / "docs" / "baking.md", "# Sourdough\n\nNow about pizza: stretch the dough thin, add tomato and "
          "mozzarella, bake very hot.\n")
    (root / "docs" / "legacy.txt").unlink()
    third = run(["index", "docs"], cwd=root, env=env)
    err = third.stderr.decode()
    assert "indexed 1 file, 4 unchanged, 1 removed" in err, err
    hits = run(["query", "dessert menu", "--json", "-k", "10"], cwd=root, env=env).stdout.decode()
    assert "legacy.txt" not in hits
    top = json.loads(run(["query", "pizza with mozzarella", "--json", "-k", "1"], cwd=root, env=env).stdout)
    assert top["path"] == "docs/baking.md"


def test_status_reports_index(corpus) -> None:
    root, env, _ = corpus
    result = run(["status", "--json"], cwd=(root / "docs" / "src"), env=env)
    data = json.loads(result.stdout)
    assert data["model"] == "all-MiniLM-L6-v2" and data["dim"] == 384 and data["chunks"] >= 4
    with IndexReader(Path(data["index"])) as reader:
        assert sum(1 for _ in reader.chunks()) == data["chunks"]
