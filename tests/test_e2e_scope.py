"""Scoped search, `similar` and `duplicates` end to end: the real bundled model, real files, the
installed console script in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_pdf, write
from test_e2e import run

pytestmark = pytest.mark.model

TLS = (
    "# Serving over HTTPS\n\nTo enable HTTPS, obtain a TLS certificate from a certificate authority such as "
    "Let's Encrypt, then point the server's ssl_certificate and ssl_certificate_key settings at the "
    "certificate chain and the private key. Renew certificates before they expire, or automate the renewal "
    "with a cron job that reloads the server afterwards.\n"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("e2e-scope")
    write(root / "web" / "tls.md", TLS)
    write(root / "web" / "proxy.md", "# Reverse proxies\n\nPut nginx in front of the application server; "
          "it terminates TLS, serves static files and forwards requests to the app on a local port.\n")
    write(root / "kitchen" / "sourdough.md", "# Sourdough\n\nMix flour, water and starter. Let the dough ferment "
          "overnight, shape the loaf, and bake it in a preheated Dutch oven for forty minutes.\n")
    write(root / "kitchen" / "pasta.txt", "Fresh pasta: knead flour and eggs into a smooth dough, rest it, roll "
          "it thin and cut it into ribbons. Boil for two minutes in salted water.\n")
    write(root / "src" / "retry.py", "import time\n\n\ndef call_with_backoff(func, attempts=5):\n"
          "    \"\"\"Retry func with exponentially growing waits between attempts.\"\"\"\n"
          "    for attempt in range(attempts):\n        try:\n            return func()\n"
          "        except ConnectionError:\n            time.sleep(0.5 * 2 ** attempt)\n")
    make_pdf(root / "papers" / "plants.pdf", [
        "Chapter 1. Cells are the basic units of life.",
        "Chapter 2. Photosynthesis: plants capture energy from sunlight in their chloroplasts.",
    ])
    # A lightly edited copy of tls.md, elsewhere, and old.
    copy = write(root / "archive" / "https-notes.md", TLS.replace("Let's Encrypt", "a public CA").replace(
        "cron job", "systemd timer"))
    old = time.time() - 400 * 86400
    os.utime(copy, (old, old))
    env = {**os.environ, "SEMSEARCH_CACHE": str(root / "cache"), "NO_COLOR": "1"}
    env.pop("SEMSEARCH_INDEX", None)
    result = run(["index", "web", "kitchen", "src", "papers", "archive"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return root, env


def _json(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_filters_with_the_real_model(project) -> None:
    root, env = project
    question = "how do I renew the TLS certificate of my server"
    assert _json(run(["query", question, "--json", "-k", "1"], root, env))[0]["path"] in (
        "web/tls.md", "archive/https-notes.md")
    hits = _json(run(["query", question, "kitchen", "--json", "-k", "2"], root, env))
    assert {h["path"] for h in hits} == {"kitchen/sourdough.md", "kitchen/pasta.txt"}  # k hits, from the scope
    hits = _json(run(["query", "plants and sunlight", "-t", "pdf", "--json"], root, env))
    assert hits and all(h["type"] == "pdf" and h["page"] for h in hits)
    hits = _json(run(["query", question, "--changed-before", "90d", "--json"], root, env))
    assert [h["path"] for h in hits] == ["archive/https-notes.md"]
    hits = _json(run(["query", question, "--changed-within", "90d", "-T", "md", "--json", "-k", "3"], root, env))
    assert len(hits) == 3 and not any(h["path"].endswith(".md") for h in hits)
    assert len(_json(run(["query", question, "/", "--json", "-k", "7"], root, env))) == 7  # holds the roots
    elsewhere = root.parent / f"{root.name}-elsewhere"
    elsewhere.mkdir(exist_ok=True)
    outside = run(["query", question, str(elsewhere)], root, env)
    assert outside.returncode == 2 and b"outside the indexed folders" in outside.stderr


def test_similar_and_duplicates_read_only_the_index(project) -> None:
    root, env = project
    probe = (
        "import sys, json\n"
        "from semsearch.cli import main\n"
        "sys.argv = ['semsearch'] + sys.argv[1:]\n"
        "try:\n    main(fast_exit=False)\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = [m for m in ('onnxruntime', 'torch', 'tokenizers', 'sentence_transformers') if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    for args in (["similar", "web/tls.md:3", "--json", "-k", "3"], ["duplicates", "-l", "--json"]):
        result = subprocess.run([sys.executable, "-c", probe, *args], cwd=root, env=env, capture_output=True,
                                timeout=300)
        report = json.loads(result.stderr.decode().strip().splitlines()[-1])
        assert report == {"code": 0, "heavy": []}, result.stderr.decode()
        records = [json.loads(line) for line in result.stdout.decode().splitlines()]
        if args[0] == "similar":
            assert records[0]["path"] == "archive/https-notes.md"  # its near-copy first
            assert "web/tls.md" not in {r["path"] for r in records}
            assert records[1]["path"] == "web/proxy.md"  # then the page on the same subject
        else:
            assert [sorted(r["files"]) for r in records] == [["archive/https-notes.md", "web/tls.md"]]
    files = run(["similar", "kitchen/sourdough.md", "-l", "-k", "1"], root, env)
    assert files.stdout.decode().splitlines() == ["kitchen/pasta.txt"]
