"""Topics: the index's passages (or files) grouped by meaning, each group named by its words.

Read from the stored vectors alone (no model is loaded):

1. the vectors in scope (a file's: the mean of its chunks', normalised, with ``files=True``);
2. at most :data:`FIT_SAMPLE` of them (chosen by a hash of their ids, so that a small update
   keeps the rest of the sample) are reduced (:func:`_reduce`) and clustered by HDBSCAN, which
   leaves what fits no topic as outliers rather than forcing it into one;
3. the rest join the topic whose centre is nearest when they are at least as close to it as
   its farthest member, else they are outliers too;
4. each topic is named by the words and two-word phrases that set it apart from the others
   (class-based TF-IDF, as BERTopic does), and lists its most central passages and its files.

``depth=2`` splits each topic into subtopics the same way. The same index and options give the
same topics (fixed seeds). The choices and their measurements are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import InvalidOptionError

if TYPE_CHECKING:
    import numpy as np

    from semsearch.scope import Scope
    from semsearch.search import Hit
    from semsearch.store import ChunkRecord, IndexReader

FIT_SAMPLE = 20_000  # points clustered; the rest are assigned to the nearest topic
NAME_SAMPLE = 400  # passages per topic read for its name (the most central ones)
NAME_WORDS = 4  # words or phrases in a name
CENTRAL = 5  # central passages (or files) listed per topic
SEED = 42
UMAP_NEIGHBOURS = 15
_LINKS = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+|\]\([^)\s]*\)|\S+@\S+\.\w+")  # URLs, link targets, mail
_WORD = re.compile(r"(?u)\b[^\W\d_][\w'-]*[^\W_]\b|\b[^\W\d_]\b")


@dataclass(frozen=True)
class Topic:
    """A group of passages (or files) close in meaning."""

    id: int  # 1, 2, ... largest first (a subtopic's: 1, 2, ... within its topic)
    name: str  # its distinctive words and phrases, most distinctive first
    words: list[str]
    size: int  # passages (files with files=True)
    central: list[ChunkRecord]  # its most central passages (a file's most central one with files=True)
    files: list[tuple[Path, int]]  # its files, with how many of its passages each holds, most first
    members: list[int] = field(repr=False)  # its passages' chunk ids (files: a chunk of each), most central first
    scores: list[float] = field(repr=False)  # each member's cosine to the topic's centre
    subtopics: list[Topic] = field(default_factory=list)

    def central_hits(self) -> list[Hit]:
        """Its central passages as hits, the score (and ``scores["cosine"]``) their cosine to its centre."""
        from semsearch.search import Hit

        score_of = dict(zip(self.members, self.scores, strict=True))
        return [Hit(rank, score_of.get(c.id, 0.0), c, {"cosine": score_of.get(c.id, 0.0)})
                for rank, c in enumerate(self.central, 1)]  # fmt: skip


@dataclass(frozen=True)
class Topics:
    """The topics of an index's passages in scope, largest first, and what fits none."""

    topics: list[Topic]
    outliers: int  # passages (files) in no topic
    files: bool  # grouped by file
    ids: Any = field(repr=False)  # every point's chunk id (files: its first chunk), as clustered
    vectors: Any = field(repr=False)  # every point's vector, normalised
    labels: Any = field(repr=False)  # every point's topic (its index in topics), -1 for outliers
    graph: Any = field(repr=False, default=None)  # (rows clustered, their neighbours): reused by the map

    @property
    def size(self) -> int:
        """How many passages (files) were grouped, in topics or in none."""
        return len(self.ids)

    @property
    def outlier_ids(self) -> list[int]:
        """The chunk ids of what fits no topic (files: a chunk of each)."""
        return [int(i) for i in self.ids[self.labels < 0]]


@dataclass(frozen=True)
class TopicOptions:
    files: bool = False  # group files (their passages' mean vector), not passages
    min_size: int | None = None  # the fewest members of a topic (None: from the corpus's size)
    depth: int = 1  # 2: each topic split into subtopics
    seed: int = SEED


def find_topics(reader: IndexReader, options: TopicOptions | None = None, scope: Scope | None = None) -> Topics:
    """The topics of the passages (files) in *scope*, from the index alone."""
    import numpy as np

    options = options or TopicOptions()
    if options.depth not in (1, 2):
        raise InvalidOptionError(f"{{depth}} must be 1 or 2 (got {options.depth})", options=("depth",))
    if options.min_size is not None and options.min_size < 2:
        raise InvalidOptionError(f"{{min_size}} must be at least 2 (got {options.min_size})", options=("min_size",))
    ids, owners, vectors = _vectors(reader, scope)
    if options.files:
        ids, owners, vectors = _file_vectors(ids, owners, vectors)
    labels = np.full(len(ids), -1, dtype=np.int64)
    if len(ids) == 0:
        return Topics([], 0, options.files, ids, vectors, labels)
    min_size = options.min_size or default_min_size(len(ids))
    raw, graph = cluster(vectors, min_size, options.seed)
    order = _by_size(raw)
    for new, old in enumerate(order):
        labels[raw == old] = new
    namer = _Namer(reader, ids, owners, options.files)
    groups = [_by_centrality(vectors, np.flatnonzero(labels == t)) for t in range(len(order))]
    words = namer.names(groups)
    topics = []
    for t, (members, cosines) in enumerate(groups):
        subtopics: list[Topic] = []
        if options.depth == 2 and len(members) >= 4 * min_size:
            subtopics = _subtopics(vectors, np.sort(members), min_size, options.seed, namer)
        topics.append(namer.topic(t + 1, words[t], members, cosines, subtopics))
    return Topics(topics, int((labels < 0).sum()), options.files, ids, vectors, labels, graph)


def default_min_size(n: int) -> int:
    """The fewest members of a topic among *n* points: about one in 100 of those clustered (5 at
    least, 100 at most), so a small folder gets a few topics and a large corpus not thousands.
    Above :data:`FIT_SAMPLE` points, the sample's (100) times the points each sampled one stands for."""
    return max(5, min(100, min(n, FIT_SAMPLE) // 100)) * max(1, n // FIT_SAMPLE)


def cluster(vectors: np.ndarray, min_size: int, seed: int) -> tuple[np.ndarray, Any]:
    """A topic number per row (-1: an outlier): HDBSCAN on the reduced vectors of a sample, the
    rest assigned to the nearest topic's centre when close enough; and the sample's rows with
    their neighbours (None when there was nothing to cluster). *min_size* counts all the rows:
    a sample of a tenth of them looks for topics of a tenth of it."""
    import numpy as np
    from sklearn.cluster import HDBSCAN

    n = len(vectors)
    if n < 2 * min_size:
        return np.full(n, -1, dtype=np.int64), None
    sample = sample_rows(n, FIT_SAMPLE, seed)
    min_size = max(2, round(min_size * len(sample) / n))
    knn = None
    if len(sample) > UMAP_NEIGHBOURS + 1:  # else too few for a reduction: HDBSCAN on the vectors
        knn = knn_graph(vectors[sample], UMAP_NEIGHBOURS)
        reduced = umap_embedding(vectors[sample], 5, seed, knn)
    else:
        reduced = np.asarray(vectors[sample], dtype=np.float64)
    found = HDBSCAN(min_cluster_size=min_size, min_samples=min(min_size, 10), copy=True).fit_predict(reduced)
    labels = np.full(n, -1, dtype=np.int64)
    labels[sample] = found
    if len(sample) < n:
        rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
        labels[rest] = _assign(vectors, sample, found, rest)
    return labels, (sample, knn)


def knn_graph(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's *k* nearest rows by cosine (itself first) and their cosine distances: exact,
    in blocks (a second or two at 20,000 rows), so that UMAP need not search for them itself
    (its search is compiled by numba on every run: most of its time)."""
    import numpy as np

    n = len(vectors)
    k = min(k, n)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, 2048):
        sims = vectors[start : start + 2048] @ vectors.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = np.inf  # itself first
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)
        indices[start : start + len(sims)] = best
        near = np.take_along_axis(sims, best, axis=1)
        near[:, 0] = 1.0
        distances[start : start + len(sims)] = np.clip(1.0 - near, 0.0, 2.0)
    return indices, distances


def umap_embedding(
    vectors: np.ndarray,
    dims: int,
    seed: int,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
    min_dist: float = 0.0,
) -> np.ndarray:
    """UMAP of *vectors* (cosine) in *dims* dimensions, reproducible with *seed* (one thread);
    *knn*: the rows' neighbours (:func:`knn_graph`), made here when not given; *min_dist*: 0
    packs close points together (for clustering), more spreads them (for the eye)."""
    import os

    import numpy as np

    from semsearch.models.resolve import cache_dir

    # numba compiles UMAP's functions on first use (seconds); its cache keeps some for the next run.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
    try:
        import umap
    except ImportError:
        raise InvalidOptionError("topics need umap-learn: pip install 'semsearch[topics]'") from None
    indices, distances = knn if knn is not None else knn_graph(vectors, UMAP_NEIGHBOURS)
    reducer = umap.UMAP(n_components=dims, n_neighbors=indices.shape[1], min_dist=min_dist, metric="cosine",
                        random_state=seed, n_jobs=1, precomputed_knn=(indices, distances, None))  # fmt: skip
    with warnings.catch_warnings():  # its notes (a spectral start that fell back, ...) are not the user's
        warnings.simplefilter("ignore")
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float64)


def sample_rows(n: int, most: int, seed: int) -> np.ndarray:
    """Rows to cluster: all, or *most* of them chosen by a hash of the row's position salted
    with *seed* (a reproducible choice)."""
    import numpy as np

    if n <= most:
        return np.arange(n)
    keys = np.array([_hash(i, seed) for i in range(n)], dtype=np.uint64)
    return np.sort(np.argsort(keys, kind="stable")[:most])


def _hash(value: int, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{value}".encode(), digest_size=8).digest(), "little")


def _assign(vectors: np.ndarray, sample: np.ndarray, found: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Each row of *rest* joins the topic of the nearest centre, when it is at least as close to
    that centre as the topic's farthest member; else it is an outlier. (A floor at the members'
    tenth percentile made a tenth of the rest outliers by construction: ARI to the papers 0.64
    against 0.83 with a quarter sampled; none at all, 0.88, but then nothing left out is an outlier.)"""
    import numpy as np

    topics = sorted(set(found.tolist()) - {-1})
    if not topics:
        return np.full(len(rest), -1, dtype=np.int64)
    centres = np.stack([vectors[sample[found == t]].mean(axis=0) for t in topics])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    floors = np.array([(vectors[sample[found == t]] @ centres[k]).min() for k, t in enumerate(topics)])
    out = np.empty(len(rest), dtype=np.int64)
    for start in range(0, len(rest), 65536):
        part = rest[start : start + 65536]
        cos = vectors[part] @ centres.T
        best = cos.argmax(axis=1)
        close = cos[np.arange(len(part)), best] >= floors[best]
        out[start : start + len(part)] = np.where(close, np.asarray(topics)[best], -1)
    return out


def _by_size(labels: np.ndarray) -> list[int]:
    """Topic numbers, largest first (ties: the lower number first)."""
    counts = Counter(int(x) for x in labels.tolist() if x >= 0)
    return sorted(counts, key=lambda t: (-counts[t], t))


def _subtopics(vectors: np.ndarray, members: np.ndarray, min_size: int, seed: int, namer: _Namer) -> list[Topic]:
    inner, _ = cluster(vectors[members], max(2, min_size // 2), seed)
    order = _by_size(inner)
    if len(order) < 2:
        return []
    groups = [_by_centrality(vectors, members[inner == old]) for old in order]
    words = namer.names(groups)
    return [namer.topic(k + 1, words[k], rows, cosines, []) for k, (rows, cosines) in enumerate(groups)]


def _by_centrality(vectors: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """*members* (rows), most central first, and their cosines to the topic's centre (their mean)."""
    import numpy as np

    centre = vectors[members].mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    cosines = vectors[members] @ centre
    order = np.argsort(-cosines, kind="stable")
    return members[order], cosines[order]


def _vectors(reader: IndexReader, scope: Scope | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import numpy as np

    within = reader.subset(scope)
    ids, owners, vectors = [], [], []
    for chunk_ids, files, batch, _ in reader.chunk_vectors(within):
        ids.append(chunk_ids)
        owners.append(files)
        vectors.append(np.array(batch, dtype=np.float32))
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 1), dtype=np.float32)
    out = np.concatenate(vectors)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.concatenate(ids), np.concatenate(owners), out


def _file_vectors(ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, ...]:
    """A point per file: its chunks' mean vector, normalised, under its first chunk's id."""
    import numpy as np

    files, first, inverse = np.unique(owners, return_index=True, return_inverse=True)
    sums = np.zeros((len(files), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, vectors)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return ids[first], files, sums.astype(np.float32)


class _Namer:
    """Names, central passages and files of topics: texts read from the index as needed."""

    def __init__(self, reader: IndexReader, ids: np.ndarray, owners: np.ndarray, files: bool) -> None:
        self.reader = reader
        self.ids = ids
        self.owners = owners
        self.files = files

    def _texts(self, rows: np.ndarray) -> list[str]:
        if not self.files:
            records = self.reader.fetch_chunks(self.ids[rows].tolist())
            return [records[int(i)].text for i in self.ids[rows] if int(i) in records]
        # A file: its first passages (the name and the opening), all the files' in one fetch.
        records = self.reader.fetch_chunks([int(self.ids[row]) + k for row in rows.tolist() for k in range(3)])
        texts = []
        for row in rows.tolist():
            first, owner = int(self.ids[row]), int(self.owners[row])
            parts = (records.get(first + k) for k in range(3))
            texts.append(" ".join(r.text for r in parts if r is not None and r.file_id == owner))
        return texts

    def names(self, groups: list[tuple[np.ndarray, np.ndarray]]) -> list[list[str]]:
        """Each group's distinctive words and phrases (from its most central members' texts),
        against the other groups; *groups* as :func:`_by_centrality` gives them."""
        per = max(20, NAME_SAMPLE if not self.files else NAME_SAMPLE // 4)
        docs = [" ".join(self._texts(rows[:per])) for rows, _ in groups]
        return distinctive_words(docs, NAME_WORDS)

    def topic(self, number: int, words: list[str], members: np.ndarray, cosines: np.ndarray,
              subtopics: list[Topic]) -> Topic:  # fmt: skip
        """A topic of *members* (rows, most central first) with their *cosines* to its centre."""
        central_rows = members[:CENTRAL]
        records = self.reader.fetch_chunks(self.ids[central_rows].tolist())
        central = [records[int(i)] for i in self.ids[central_rows] if int(i) in records]
        counts = Counter(int(f) for f in self.owners[members].tolist())
        paths = self.reader.file_chunk_counts(set(counts))
        files = sorted(((paths[f][0], n) for f, n in counts.items() if f in paths), key=lambda p: (-p[1], str(p[0])))
        return Topic(
            id=number,
            name=", ".join(words) if words else f"topic {number}",
            words=words,
            size=len(members),
            central=central,
            files=files,
            members=self.ids[members].tolist(),
            scores=[round(float(c), 4) for c in cosines],
            subtopics=subtopics,
        )


def distinctive_words(
    docs: list[str], most: int, stop_words: Callable[[], frozenset[str]] | None = None
) -> list[list[str]]:
    """For each of *docs* (a topic's text), the words and two-word phrases that set it apart from
    the others: class-based TF-IDF (a term's share of the topic's words times log(1 + the mean
    words per topic / the term's count in all topics)). A word already in a chosen phrase is not
    chosen again."""
    stop = (stop_words or _stop_words)()
    counts: list[Counter[str]] = []
    for doc in docs:
        # NFKC: a PDF's ligatures ("ﬁle") are the letters they stand for ("file").
        words = [w.lower() for w in _WORD.findall(_LINKS.sub(" ", unicodedata.normalize("NFKC", doc)))]
        terms = Counter(w for w in words if w not in stop and len(w) > 2)
        terms.update(f"{a} {b}" for a, b in itertools.pairwise(words)
                     if a not in stop and b not in stop and len(a) > 2 and len(b) > 2)  # fmt: skip
        counts.append(terms)
    overall: Counter[str] = Counter()
    for terms in counts:
        overall.update(terms)
    mean_words = sum(sum(c.values()) for c in counts) / max(1, len(counts))
    out = []
    for terms in counts:
        total = sum(terms.values()) or 1
        scored = sorted(
            ((n / total * math.log(1 + mean_words / overall[t]), t) for t, n in terms.items() if n >= 2),
            key=lambda s: (-s[0], s[1]),
        )
        chosen: list[str] = []
        for _, term in scored:
            stems = {_stem(w) for w in term.split()}
            if any(stems & {_stem(w) for w in c.split()} for c in chosen):
                continue  # a word (or its plural) already in the name
            parts = term.split()
            if len(parts) == 2 and parts[0] == parts[1]:
                continue
            chosen.append(term)
            if len(chosen) == most:
                break
        out.append(chosen)
    return out


def _stem(word: str) -> str:
    """A word without its plural ending: "dependencies" and "dependency" are one word in a name."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)
