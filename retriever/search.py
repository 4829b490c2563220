"""Query-time search over an index directory: dense (FAISS), BM25 (bm25s), or hybrid (reciprocal rank fusion).

    from retriever.search import IndexRetriever
    r = IndexRetriever.load("artifacts/index")
    for hit in r.search("how is ewing sarcoma treated", k=5, mode="hybrid"):
        print(hit.rank, hit.passage.id, hit.passage.title, hit.score)

The query embedder is the copy stored in the index, so query and passage vectors always come from the same
model; the manifest's checksum is verified at load. Hybrid fuses the top `candidates` of each side with
RRF: score = sum 1 / (rrf_k + rank).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from core.errors import IndexCorruptError, InvalidRequestError
from core.types import SEARCH_MODES, Hit, Passage, SearchMode
from retriever import index_dir as fmt
from retriever.embedder import dir_checksum, load_embedder

MAX_K = 100


def _query_embedder(root: Path, record: dict, threads: int, verify: bool):
    """The index's embedder on the backend its passages were embedded with (manifest `embedder.backend`; indexes
    from before backends were recorded are torch), at the precision recorded, from the same converted file."""
    backend = record.get("backend", "torch")
    embedder_dir = root / fmt.EMBEDDER_DIR
    if backend == "openvino":
        from retriever.openvino_embedder import export_path, export_sha256

        if not export_path(embedder_dir).is_file() or (verify and export_sha256(embedder_dir)
                                                       != record.get("export_sha256")):
            raise IndexCorruptError(f"the OpenVINO export in {embedder_dir} is missing or does not match its manifest "
                                    f"checksum; rebuild with `medcite index --out {root}`")
    return load_embedder(str(embedder_dir), threads, backend=backend, precision=record.get("precision", ""))


class IndexRetriever:
    """Loaded once (at start-up), then `search` is called per query. Thread-safe for concurrent reads."""

    def __init__(self, root: Path, manifest: dict, passages: list[Passage], dense, bm25, embedder,
                 duplicates: dict[str, str], rrf_k: int = 60, candidates: int = 100, reranker=None,
                 qtype_prior: bool = False, entailment=None):
        import numpy as np

        self.root, self.manifest, self.passages = root, manifest, passages
        self.dense, self.bm25, self.embedder = dense, bm25, embedder
        self.duplicates = duplicates
        self.rrf_k, self.candidates = rrf_k, candidates
        self.reranker = reranker
        """A retriever.rerank.Reranker rescoring the top hybrid candidates, or None."""
        self.qtype_prior = qtype_prior
        """Fuse in the records whose title's question type (MedQuAD's "Gout: treatment") matches what the
        question asks (hybrid only; `question_types`)."""
        self.entailment = entailment
        """A retriever.entailment.Entailment fusing in the records of the answered questions the query entails
        (hybrid only), or None."""
        self.fingerprint: str = manifest["fingerprint"]
        cal = manifest.get("calibration") or {}
        # a calibration is this index's only when it was made with this index's embedder (no silent reuse)
        self.calibration: dict = cal if cal.get("embedder_sha256") == manifest["embedder"]["sha256"] else {}
        self.sources = sorted({p.source for p in passages})
        self._by_record: dict[str, list[Passage]] = {}
        self._first_row: dict[str, int] = {}
        for row, p in enumerate(passages):
            self._by_record.setdefault(p.record_id, []).append(p)
            self._first_row.setdefault(p.record_id, row)
        src = np.array([p.source for p in passages])
        # Per-source masks for filtered search: BM25 takes a weight mask, FAISS an id selector.
        self._source_ids = {s: np.flatnonzero(src == s).astype("int64") for s in self.sources}
        import Stemmer

        # The query is tokenized exactly as the passages were at build time (settings from the manifest).
        self._stemmer = Stemmer.Stemmer(manifest["bm25"]["stemmer"])
        import bm25s.stopwords

        self._stopwords = frozenset(bm25s.stopwords.STOPWORDS_EN)

    @classmethod
    def load(cls, root: str | Path, threads: int = 0, verify_embedder: bool = True, **kwargs) -> IndexRetriever:
        import bm25s
        import faiss

        root = Path(root)
        manifest = fmt.check_index_dir(root)
        embedder_dir = root / fmt.EMBEDDER_DIR
        if verify_embedder and dir_checksum(embedder_dir) != manifest["embedder"]["sha256"]:
            raise IndexCorruptError(f"the embedder in {root} does not match its manifest checksum; "
                                    f"rebuild with `medcite index --out {root}`")
        passages = fmt.read_passages(root)
        # memory-mapped and read-only: API processes on one host share one copy of the vectors or codes. MMAP maps
        # IVF lists; MMAP_IFC maps flat codes (flat, hnsw storage: without it the 59 MB flat index is read into
        # private memory, with it 0.7 MB private after load). The two flags together fail on IVF (faiss 1.15.1).
        ivf = manifest.get("faiss", {}).get("type") in ("ivfpq", "factory")
        dense = faiss.read_index(str(root / fmt.DENSE), (faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC)
                                 | faiss.IO_FLAG_READ_ONLY)
        refine = manifest.get("faiss", {}).get("refine")
        if refine:  # a compressed index's candidates re-ranked against the float vectors, mapped, not read
            flat = faiss.read_index(str(root / fmt.DENSE_REFINE), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
            dense = faiss.IndexRefine(dense, flat)  # faiss's wrapper keeps both parts alive with it
            dense.k_factor = float(refine)
        if dense.ntotal != len(passages):
            raise IndexCorruptError(f"{root}: {dense.ntotal} vectors for {len(passages)} passages; rebuild with "
                                    f"`medcite index --out {root}`")
        bm25 = bm25s.BM25.load(str(root / fmt.BM25_DIR))
        embedder = _query_embedder(root, manifest["embedder"], threads, verify_embedder)
        if embedder.get_embedding_dimension() != manifest["embedder"]["dim"] or dense.d != manifest["embedder"]["dim"]:
            raise IndexCorruptError(f"{root}: embedder dimension does not match the index; rebuild with "
                                    f"`medcite index --out {root}`")
        duplicates = fmt.read_json(root, fmt.DUPLICATES)
        return cls(root, manifest, passages, dense, bm25, embedder, duplicates, **kwargs)

    def stages(self) -> dict[str, object]:
        """Which of hybrid search's optional stages run (reported by /readyz)."""
        ent = self.entailment
        return {"qtype_prior": self.qtype_prior, "reranker": self.reranker is not None,
                "entailment": "off" if ent is None else ("model" if ent.model is not None else "cosine")}

    def passages_of(self, record_id: str) -> list[Passage]:
        """Every passage of a record, in text order (used to put a gold passage into training examples)."""
        return self._by_record.get(self.resolve_record(record_id), [])

    def embed(self, texts: list[str]):
        return self.embedder.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32,
                                    show_progress_bar=False).astype("float32")

    def knows(self, word: str) -> bool:
        w = word.lower()
        if w in self._stopwords:
            return True
        return self._stemmer.stemWord(w) in self.bm25.vocab_dict

    def focus_terms(self, text: str) -> set[str]:
        """The stemmed content words of a text that can name what it is about (no stopwords, no words every
        disease name shares: "disease", "syndrome", "cancer"), as BM25 stems them."""
        return {self._stemmer.stemWord(w) for w in re.findall(r"[a-z0-9]+", text.lower())
                if len(w) > 2 and w not in self._stopwords and w not in GENERIC_NAME_WORDS}

    def resolve_record(self, record_id: str) -> str:
        """The id under which a record's text is indexed (exact-duplicate answers were merged at build time)."""
        return self.duplicates.get(record_id, record_id)

    # --- the three rankers; each returns [(passage row, score)] best first -----------------------------------

    def query_vector(self, query: str):
        """The query's unit vector, shape (1, dim), as the passages were embedded."""
        return self.embedder.encode([query], normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False).astype("float32")

    def _dense(self, query: str, n: int, source: str | None, vec=None) -> list[tuple[int, float]]:
        import faiss

        vec = self.query_vector(query) if vec is None else vec
        params = None
        if source is not None:
            sel = faiss.IDSelectorBatch(self._source_ids[source])
            params = faiss.SearchParameters(sel=sel) if isinstance(self.dense, faiss.IndexFlat) else None
            if params is None:  # HNSW/IVF take their own parameter classes; over-fetch and filter instead
                n_fetch = min(self.dense.ntotal, n * 20)
                scores, ids = self.dense.search(vec, n_fetch)
                keep = set(self._source_ids[source].tolist())
                return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i in keep][:n]
        scores, ids = self.dense.search(vec, n, params=params) if params else self.dense.search(vec, n)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _bm25(self, query: str, n: int, source: str | None, vec=None) -> list[tuple[int, float]]:
        import bm25s
        import numpy as np

        tokens = bm25s.tokenize([query], stopwords=self.manifest["bm25"]["stopwords"], stemmer=self._stemmer,
                                return_ids=False, show_progress=False)[0]
        vocab = self.bm25.vocab_dict
        tokens = [t for t in tokens if t in vocab]
        if not tokens:  # nothing in the query occurs in the corpus: BM25 has no opinion
            return []
        mask = None
        if source is not None:
            mask = np.zeros(len(self.passages), dtype=np.float32)
            mask[self._source_ids[source]] = 1.0
        ids, scores = self.bm25.retrieve([tokens], k=min(n, len(self.passages)), weight_mask=mask,
                                         show_progress=False, n_threads=0)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    def _hybrid(self, query: str, n: int, source: str | None, vec=None) -> list[tuple[int, float]]:
        fused: dict[int, float] = {}
        for ranked in (self._dense(query, n, source, vec), self._bm25(query, n, source)):
            for rank, (i, _) in enumerate(ranked, start=1):
                fused[i] = fused.get(i, 0.0) + 1.0 / (self.rrf_k + rank)
        return sorted(fused.items(), key=lambda t: (-t[1], t[0]))

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid", source: str | None = None,
               per_record: bool = True) -> list[Hit]:
        """Top-k results for a query: by default k distinct records, each by its best passage (a long record's
        neighbouring chunks no longer crowd out other records: top-10 passages held 8-9 records); per_record=False
        returns the top-k passages themselves. Bad arguments raise InvalidRequestError with a one-line message."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("query is empty")
        if not 1 <= k <= MAX_K:
            raise InvalidRequestError(f"k must be between 1 and {MAX_K}, got {k}")
        if mode not in SEARCH_MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        if source is not None and source not in self._source_ids:
            raise InvalidRequestError(f"unknown source {source!r}; this index has {', '.join(self.sources)}")
        # Collapsing needs more passages than records asked for: 4 per record first (hybrid fuses at least its
        # `candidates`), more while a long record's chunks still crowd the list (the whole index at most).
        rank = {"dense": self._dense, "bm25": self._bm25, "hybrid": self._hybrid}[mode]
        fetch = k * 4 if per_record else k
        if mode == "hybrid":
            fetch = max(fetch, self.candidates)
        vec = None if mode == "bm25" else self.query_vector(query)  # once a search, however often it re-fetches
        ranked = rank(query, fetch, source, vec)
        while per_record:
            collapsed = best_per_record(ranked, self.passages)
            if len(collapsed) >= k or len(ranked) < fetch or fetch >= len(self.passages):
                ranked = collapsed
                break
            fetch *= 4
            ranked = rank(query, fetch, source, vec)
        if self.qtype_prior and mode == "hybrid":
            ranked = fuse_question_type(query, ranked, self.passages, self.rrf_k, self.focus_terms)
        if self.entailment is not None and mode == "hybrid" and source is None:
            ranked = self.entailment.fuse(query, vec[0], ranked, self.passages, self._first_row)
        if self.reranker is not None and mode == "hybrid":
            ranked = self.reranker.rerank(query, ranked, self.passages)
        return [Hit(self.passages[i], score, rank) for rank, (i, score) in enumerate(ranked[:k], start=1)]


def best_per_record(ranked: list[tuple[int, float]], passages: list[Passage]) -> list[tuple[int, float]]:
    """The ranked list with each record's later passages dropped (its best one keeps the record's place)."""
    seen: set[str] = set()
    out = []
    for i, score in ranked:
        rid = passages[i].record_id
        if rid not in seen:
            seen.add(rid)
            out.append((i, score))
    return out


# What a question asks, in words, -> the question type a MedQuAD title names ("Gout: treatment"; core.corpus titles
# say "overview" for information and "diagnosis" for exams and tests).
QUESTION_TYPES: dict[str, re.Pattern] = {t: re.compile(p, re.I) for t, p in {
    # and the ways people ask for one: "How do I get rid of these little devils?" (body lice), "How to Stop
    # Snoring", "how to remove my mouth ulcer" (consumer dev messages)
    "treatment": r"\b(treat\w*|therap\w*|cure[sd]?|manag\w*|medication|medicines?|surgery|get rid of|"
                 r"how (?:do|can|could|should) (?:i|we|you|one) (?:stop|remove|relieve|ease|heal|fix)|"
                 r"how to (?:stop|remove|relieve|ease|heal|fix))\b",
    "symptoms": r"\b(symptoms?|signs?)\b",
    "causes": r"\b(caus\w*|why (do|does|did))\b",
    "inheritance": r"\b(inherit\w*|hereditary|run in (the )?famil\w*|passed (down|on))\b",
    "genetic changes": r"\b(genes?|mutations?|genetic changes)\b",
    "frequency": r"\b(how (common|many|rare)|frequency|prevalen\w*)\b",
    "diagnosis": r"\b(diagnos\w*|tests?|exams?)\b",
    "outlook": r"\b(outlook|prognosis|life expectancy|survival)\b",
    "susceptibility": r"\b(at risk|risk factors?|who gets)\b",
    "prevention": r"\b(prevent\w*)\b",
    "research": r"\b(research|clinical trials?)\b",
    "stages": r"\b(stages?|staging)\b",
    "complications": r"\bcomplications?\b",
    # "What is (are) X?", "what is a stroke", "what does X mean" ask for the record MedQuAD files as X's overview
    # ("the symptoms", "it", "this" are other questions). Measured on the tuned index, record recall@3 (the k
    # shown): dev 0.97 -> 0.99, patient-style rewrites (400) 0.83 -> 0.925
    "overview": r"\bwhat (?:is|are|'s)(?: \(are\))? (?!the\b|it\b|this\b|that\b|these\b|there\b|my\b|your\b|"
                r"causing\b|being\b)|\bwhat does .{3,60} mean\b",
}.items()}


GENERIC_NAME_WORDS = frozenset({
    "disease", "diseases", "disorder", "disorders", "syndrome", "syndromes", "condition", "conditions", "cancer",
    "cancers", "type", "types", "infection", "infections", "deficiency", "chronic", "acute", "familial",
    "hereditary", "congenital", "child", "children", "childhood", "adult", "adults", "what", "how", "who", "can",
    "does", "get", "have"})
"""Words too common in disease names to say which one a question is about."""


def question_types(query: str) -> set[str]:
    return {t for t, p in QUESTION_TYPES.items() if p.search(query)}


QTYPE_NAMED_SHARE = True
"""The prior's condition: most of the title's name in the question (False: one shared word, as before; measured
both ways in benchmarks/retrieval.py --parts qtype)."""


def fuse_question_type(query: str, ranked: list[tuple[int, float]], passages: list[Passage], rrf_k: int,
                       focus_terms: Callable[[str], set[str]] | None = None) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of the hybrid order with the order of the records whose title's question type is
    one the question asks for (nothing changes when it names none, or no candidate matches).

    With `focus_terms` (IndexRetriever.focus_terms) the prior is conditional: only records whose title names what
    the question is about (a content word of the title's subject is one of the question's, the type words taken
    out) are lifted. Without the condition it lifted other diseases' records of the asked type over the right
    one ("What causes Gonorrhea?" -> "Proctitis: causes"): consumer dev recall@5 0.776 -> 0.735, while MedQuAD
    dev rose 0.89 -> 0.985 (benchmarks/retrieval.py --parts qtype)."""
    wanted = question_types(query)
    if not wanted:
        return ranked
    about: set[str] | None = None
    if focus_terms is not None:
        rest = query
        for t in wanted:
            rest = QUESTION_TYPES[t].sub(" ", rest)
        about = focus_terms(rest)
        if not about:
            return ranked

    def lifted(i: int) -> bool:
        subject, _, qtype = passages[i].title.rpartition(": ")
        if qtype.lower() not in wanted:
            return False
        if about is None:
            return True
        named = focus_terms(subject)
        # most of the title's name is in the question: one shared word lifted look-alikes of the asked type
        # ("Ectopic Kidney: symptoms" for ectopic pregnancy, "Isolated anterior cervical hypertrichosis: symptoms"
        # for cervical cancer, rare subtypes "Juvenile myoclonic epilepsy: causes" for epilepsy)
        if not QTYPE_NAMED_SHARE:
            return bool(named & about)
        # "Non-small cell lung cancer" is not "small cell lung cancer", nor non-Hodgkin lymphoma Hodgkin's
        return len(named & about) > len(named) / 2 and ("non" in named) == ("non" in about)

    matching = [i for i, _ in ranked if lifted(i)]
    if not matching:
        return ranked
    bonus = {i: 1.0 / (rrf_k + r) for r, i in enumerate(matching, start=1)}
    fused = [(i, 1.0 / (rrf_k + r) + bonus.get(i, 0.0)) for r, (i, _) in enumerate(ranked, start=1)]
    return sorted(fused, key=lambda t: -t[1])
