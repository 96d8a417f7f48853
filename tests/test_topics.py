"""`topics`: passages and files grouped by meaning and named by their words, from the stored
vectors alone; the map, in a real browser; the real model on a corpus of known subjects."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch import Index, InvalidOptionError
from semsearch.cli import app
from semsearch.topics import distinctive_words

THEMES = {
    "herons": "heron egret wading bird shallow water fish marsh reeds feathers",
    "bread": "bread dough flour yeast oven crust knead bake loaf sourdough",
    "rust": "rust borrow checker ownership lifetime compiler crate cargo trait",
    "tides": "tide moon ocean shore wave current coast harbour gravity",
}
FILLER = ["the", "a", "of", "and", "with", "in", "on", "for", "this", "that", "some", "many", "every"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _page(theme: str, n: int, rng: random.Random) -> str:
    words = THEMES[theme].split()
    lines = [f"# Notes {n}", ""]
    for _ in range(6):  # the theme's first words the most common (as in real text: Zipf)
        picked = rng.choices(words, weights=[1 / (k + 1) for k in range(len(words))], k=5) + rng.sample(FILLER, 3)
        rng.shuffle(picked)
        lines += [" ".join(picked) + ".", ""]
    return "\n".join(lines)


class NoModel(FakeModel):
    def query_embedder(self):  # type: ignore[override]
        raise AssertionError("topics loaded the query model")

    def embedder(self):  # type: ignore[override]
        raise AssertionError("topics loaded the model")


def build(root: Path, files: int = 12, skip: set[str] = frozenset()) -> Path:  # type: ignore[assignment]
    rng = random.Random(7)
    for theme in THEMES:
        for n in range(files):
            name = f"{theme}{n:02d}.md"
            if name not in skip:
                write(root / "docs" / theme / name, _page(theme, n, rng))
    with Index.create(root / ".semsearch", provider=FakeModel(), chunk_tokens=24, overlap_tokens=4) as index:
        index.update([root / "docs"])
    return root


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return build(tmp_path)


@pytest.fixture
def index(tree: Path) -> Iterator[Index]:
    with Index.open(tree / ".semsearch", provider=NoModel()) as opened:
        yield opened


def theme_of(path: Path) -> str:
    return path.parent.name


def test_passages_fall_into_their_themes_and_are_named_by_their_words(index: Index) -> None:
    from sklearn.metrics import adjusted_rand_score

    found = index.topics(min_size=5)
    assert len(found.topics) == 4
    assert [t.size for t in found.topics] == sorted((t.size for t in found.topics), reverse=True)
    assert found.outliers + sum(t.size for t in found.topics) == found.size > 0
    assert found.outliers <= 0.1 * found.size
    truth, predicted = [], []
    for topic in found.topics:
        themes = {theme_of(path) for path, _ in topic.files}
        assert len(themes) == 1, (topic.name, themes)  # every passage of a topic is of one theme
        (theme,) = themes
        assert set(topic.words) <= set(THEMES[theme].split()) | {f"{a} {b}" for a in THEMES[theme].split()
                                                                for b in THEMES[theme].split()}  # fmt: skip
        assert topic.name == ", ".join(topic.words) and len(topic.words) >= 2
        assert topic.central and all(theme_of(c.path) == theme for c in topic.central)
        assert topic.scores == sorted(topic.scores, reverse=True)  # most central first
        truth += [theme] * topic.size
        predicted += [topic.id] * topic.size
    assert adjusted_rand_score(truth, predicted) == 1.0


def test_files_group_by_their_passages(index: Index) -> None:
    found = index.topics(files=True, min_size=5)
    assert found.files and found.size == 48
    assert len(found.topics) == 4 and found.outliers == 0
    for topic in found.topics:
        assert len({theme_of(path) for path, _ in topic.files}) == 1 and topic.size == 12


def test_the_same_options_give_the_same_topics_and_a_small_update_keeps_the_names(tmp_path: Path) -> None:
    first = build(tmp_path / "a")
    with Index.open(first / ".semsearch", provider=NoModel()) as opened:
        one = [(t.name, t.members) for t in opened.topics(min_size=5).topics]
        again = [(t.name, t.members) for t in opened.topics(min_size=5).topics]
    assert one == again
    second = build(tmp_path / "b", skip={"bread03.md", "tides07.md"})  # two files fewer
    with Index.open(second / ".semsearch", provider=NoModel()) as opened:
        changed = [set(t.words) for t in opened.topics(min_size=5).topics]
    # Each topic is still there, named by (at least three of) the same four words.
    before = [set(name.split(", ")) for name, _ in one]
    assert all(any(len(old & new) >= 3 for new in changed) for old in before), (before, changed)


def test_subtopics(index: Index) -> None:
    found = index.topics(min_size=5, depth=2)
    split = [t for t in found.topics if t.subtopics]
    assert split, "no topic was split"
    for topic in split:
        assert sum(s.size for s in topic.subtopics) <= topic.size
        assert all(s.name and s.id >= 1 for s in topic.subtopics)
        assert set().union(*(set(s.members) for s in topic.subtopics)) <= set(topic.members)
    with pytest.raises(InvalidOptionError, match="depth must be 1 or 2"):
        index.topics(depth=3)


def test_too_few_passages_give_no_topics(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "one.md", "Only one small file about herons.")
    with Index.create(tmp_path / ".semsearch", provider=FakeModel()) as created:
        created.update([tmp_path / "docs"])
    with Index.open(tmp_path / ".semsearch", provider=NoModel()) as opened:
        found = opened.topics()
    assert found.topics == [] and found.outliers == found.size == 1


def test_distinctive_words_are_the_ones_that_set_a_topic_apart() -> None:
    docs = ["the oven bakes bread, bread and dough, flour and bread", "the compiler checks the borrow, borrow checker"]
    names = distinctive_words(docs, 3)
    assert names[0][0] == "bread" and "oven" not in names[1]
    assert "borrow checker" in names[1] or "borrow" in names[1]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def cli(tree: Path, fake_cli: FakeModel) -> Path:
    return tree


def test_the_command(cli: Path) -> None:
    text = run("topics", "--min-size", "5")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].endswith("passages, 4 topics, 0 in none") or " 4 topics, " in lines[0]
    assert sum(1 for line in lines if line[:3] in ("1. ", "2. ", "3. ", "4. ")) == 4
    as_json = run("topics", "--min-size", "5", "--json")
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [o["topic"] for o in objects] == [1, 2, 3, 4, None] and objects[-1]["name"] == "in no topic"
    for o in objects[:-1]:
        assert {"name", "size", "words", "passages", "files"} <= set(o) and o["passages"]
        assert all(p["path"].startswith(os.path.join("docs", "")) and p["line"] >= 1 for p in o["passages"])
    files = [json.loads(line) for line in run("topics", "-l", "--min-size", "5", "--json").stdout.splitlines()]
    assert all(len(o["files"]) == 12 and "passages" not in o for o in files[:-1])
    assert files[0]["files"][0].startswith(os.path.join("docs", ""))  # as query prints paths
    chosen = run("topics", "--min-size", "5", "--topic", "2")
    assert chosen.exit_code == 0
    hits = chosen.stdout.splitlines()
    assert len(hits) == objects[1]["size"]
    themes = {Path(line.split(":")[0]).parent.name for line in hits}
    assert len(themes) == 1 and all(line.split(":")[1].isdigit() for line in hits)  # PATH:LINE:SCORE:SNIPPET
    listed = run("topics", "--min-size", "5", "--topic", "1", "-l", "-0")
    assert listed.stdout.count("\0") == 12
    for args, message in ((["--topic", "9"], "no topic 9 (there are 4)"), (["--min-size", "1"], "--min-size"),
                          (["-0"], "-0/--null goes with -l and --topic"),
                          (["--map", "map.png"], "--map writes .html or .svg (got map.png)")):  # fmt: skip
        refused = run("topics", "--min-size", "5", *args) if args[0] != "--min-size" else run("topics", *args)
        assert refused.exit_code == 2 and message in refused.output, refused.output


def test_the_map_files_work_offline(cli: Path) -> None:
    made = run("topics", "--min-size", "5", "--map", "map.html")
    assert made.exit_code == 0 and "map of " in made.output
    page = (cli / "map.html").read_text()
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert page.count('<script type="application/json" id="data">') == 1
    run("topics", "--min-size", "5", "--map", "map.svg")
    svg = ET.parse(cli / "map.svg").getroot()
    names = [el.text for el in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert len(names) == 4 and all(names)
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}circle"))) > 40


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("SEMSEARCH_REQUIRE_BROWSER"), reason="no chromium here")
def test_the_map_in_a_real_browser(cli: Path) -> None:
    assert CHROMIUM is not None, "SEMSEARCH_REQUIRE_BROWSER is set but chromium is not installed"
    from playwright.sync_api import sync_playwright

    assert run("topics", "--min-size", "5", "--map", "map.html").exit_code == 0
    topics = [json.loads(line) for line in run("topics", "--min-size", "5", "--json").stdout.splitlines()][:-1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((cli / "map.html").as_uri())
            points = page.evaluate("window.semsearchMap.points")
            page.wait_for_function(f"document.getElementById('map').dataset.drawn == '{points}'")
            labels = page.locator(".label").all_inner_texts()
            assert sorted(labels) == sorted(t["name"] for t in topics)
            assert page.locator("#legend li").count() == len(topics) + (1 if "0 in none" not in page.inner_text("#summary") else 0)
            # The canvas has ink in the topics' colours, not only the background.
            inked = page.evaluate("""() => { const c = document.getElementById('map');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
                for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
            assert inked > 200
            x, y = page.evaluate("window.semsearchMap.screenOf(0)")
            box = page.locator("#map").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + x, box["y"] + y)
            tip = page.locator("#tip")
            tip.wait_for(state="visible")
            where = tip.locator(".where").inner_text()
            assert where.startswith(os.path.join("docs", "")) and ":" in where and "topic" in tip.inner_text()
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_function("document.getElementById('toast').textContent.startsWith('Copied ')")
            assert page.inner_text("#toast") == f"Copied {where}"
            page.locator("#legend li").first.click()  # a topic alone: the others' labels go
            assert page.locator(".label").count() == 1
            assert errors == []
        finally:
            browser.close()


@pytest.mark.model
def test_real_model_topics_of_a_corpus_of_known_subjects(tmp_path: Path) -> None:
    """The real model on short texts of four subjects: the topics are the subjects, named by
    their words, and `topics` loads no model (nor torch, nor onnxruntime)."""
    subjects = {
        "astronomy": ["The telescope showed the rings of Saturn and four of Jupiter's moons.",
                      "A supernova outshines its whole galaxy for a few weeks.",
                      "The planet's orbit around its star takes three hundred days.",
                      "Astronomers measured the redshift of the distant galaxy cluster.",
                      "A comet's tail points away from the sun as it nears perihelion.",
                      "The eclipse darkened the sky as the moon passed before the sun."],
        "cooking": ["Simmer the onions in butter until they turn golden and sweet.",
                    "Knead the dough, let it rise, then bake the loaf until the crust is brown.",
                    "Season the soup with salt, pepper and a handful of fresh herbs.",
                    "Whisk the eggs with sugar, then fold in the flour for the cake.",
                    "Roast the vegetables in a hot oven with olive oil and garlic.",
                    "The sauce thickens as it reduces over a low flame."],
        "football": ["The striker scored twice before half time and the crowd roared.",
                     "The goalkeeper saved the penalty in the final minute of the match.",
                     "The coach changed the formation to defend the one-goal lead.",
                     "The league title was decided on the last day of the season.",
                     "A red card left the team with ten players for the second half.",
                     "The midfielder's pass split the defence for the winning goal."],
        "gardening": ["Plant the tulip bulbs in autumn, a hand's depth into the soil.",
                      "Prune the roses in late winter, above an outward-facing bud.",
                      "Compost the fallen leaves to feed the vegetable beds next spring.",
                      "Water the seedlings in the morning so the leaves dry by night.",
                      "Mulch around the tomato plants to keep the soil moist.",
                      "The hedge needs trimming twice a summer to stay dense."],
    }  # fmt: skip
    rng = random.Random(3)
    for subject, sentences in subjects.items():
        for n in range(8):
            write(tmp_path / "docs" / subject / f"{subject}{n}.txt", " ".join(rng.sample(sentences, 3)))
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("SEMSEARCH_MODEL", None)
    done = subprocess.run([sys.executable, "-m", "semsearch", "index", "docs", "-q"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    probe = (
        "import sys, json\n"
        "from semsearch.cli import main\n"
        "sys.argv = ['semsearch', 'topics', '-l', '--min-size', '4', '--json']\n"
        "try:\n    main(fast_exit=False)\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'onnxruntime', 'tokenizers')\n"
        "         if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, timeout=300)
    report = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, result.stderr.decode()
    topics = [json.loads(line) for line in result.stdout.decode().splitlines()][:-1]
    from sklearn.metrics import adjusted_rand_score

    truth, predicted = [], []
    for topic in topics:
        for path in topic["files"]:
            truth.append(Path(path).parent.name)
            predicted.append(topic["topic"])
    assert len(topics) == 4 and len(truth) >= 28, topics
    assert adjusted_rand_score(truth, predicted) >= 0.8, topics
    named = {Path(topic["files"][0]).parent.name: topic["words"] for topic in topics}
    vocabulary = {s: " ".join(subjects[s]).lower() for s in subjects}
    assert all(any(w.split()[0] in vocabulary[s] for w in words) for s, words in named.items()), named


def test_without_umap_the_command_says_how(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.modules['umap'] = None\n"
        "import numpy as np\n"
        "from semsearch.topics import umap_embedding\n"
        "try:\n    umap_embedding(np.ones((40, 8), dtype=np.float32), 5, 1)\nexcept Exception as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "topics need umap-learn: pip install 'semsearch[topics]'", out.stderr
