"""Embedding precision: auto picks bf16 only on CPUs with native bf16, and bf16 vectors match fp32 ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from indexer import embedding
from indexer.embedding import Embedder, resolve_precision
from indexer.errors import ModelError


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(embedding, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_fp16_on_cpu_and_unknown_precision_are_rejected() -> None:
    with pytest.raises(ModelError, match="fp16 needs --device cuda"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ModelError, match="must be one of"):
        resolve_precision("int4", "cpu")


def test_bf16_vectors_match_fp32_vectors(abstracts: list[dict[str, Any]]) -> None:
    texts = [f"{row['title']} {row['abstract']}" for row in abstracts[:24]]
    fp32 = Embedder("default", device="cpu", precision="fp32")
    bf16 = Embedder("default", device="cpu", precision="bf16")
    assert {p.dtype for p in fp32.st.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.st.parameters()} == {torch.bfloat16}
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.999
    # every text's nearest other text is the same under both precisions
    sa, sb = a @ a.T, b @ b.T
    np.fill_diagonal(sa, -1)
    np.fill_diagonal(sb, -1)
    assert (sa.argmax(axis=1) == sb.argmax(axis=1)).all()
