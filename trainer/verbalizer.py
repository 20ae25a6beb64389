"""The verbalizer head: supervised fine-tuning of a causal LM on a chat prompt, scored by its answer token.

Each view becomes a chat: a system turn (``cfg.system_prompt``), a user turn with the context
(snippets and retrieved chunks) then the question, and an assistant turn with the answer
("yes"/"no", followed by the ideal answer when ``cfg.rationale='ideal_answer'``). The loss
covers only the assistant's tokens (the prompt's labels are -100); each example's mean token
loss is weighted by its class weight. A view is scored by the next-token log-probabilities
of the first token of "no" and of "yes" right after the prompt, the two numbers standing in
for a classifier's logits everywhere downstream. Contexts are cut, in tokens, so prompt and
answer fit ``cfg.max_length``; memory is bounded by one batch of at most that many tokens.
Batches are left-padded so answers end every row: the loss computes logits for the answer
span only, and scoring for the last position only, never batch x length x vocab.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from trainer import LABELS
from trainer.config import TrainerConfig
from trainer.errors import TrainerError
from trainer.views import View

log = logging.getLogger(__name__)

IGNORE = -100
"""Label of positions that carry no loss."""


def user_text(view: View) -> str:
    """The user turn: context first, then the question."""
    context = view.context.strip()
    head = f"Context:\n{context}\n\n" if context else ""
    return f"{head}Question: {view.question}\nAnswer yes or no."


def answer_text(view: View, cfg: TrainerConfig) -> str:
    """The assistant turn's text: the label, then the ideal answer when the rationale asks for it."""
    label = view.label or ""
    if cfg.rationale == "ideal_answer" and view.ideal_answer:
        return f"{label}\n{view.ideal_answer}"
    return label


def chat_messages(view: View, cfg: TrainerConfig, *, with_answer: bool) -> list[dict[str, str]]:
    """Chat of one view in role/content form (the assistant turn only ``with_answer``)."""
    messages = [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": user_text(view)}]
    if with_answer:
        messages.append({"role": "assistant", "content": answer_text(view, cfg)})
    return messages


def prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """System and user turns through the chat template, ending with the assistant's generation prompt.

    Templates that refuse a system role (some Gemma ones) get the instructions at the top of
    the user turn instead.
    """
    try:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    except Exception:  # jinja2 TemplateError: "System role not supported"
        merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]
        return str(tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True))


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def label_token_ids(tokenizer: Any) -> tuple[int, int]:
    """(first token of "no", first token of "yes"): the two next-token scores a view is judged by."""
    no, yes = _ids(tokenizer, LABELS[0]), _ids(tokenizer, LABELS[1])
    if not no or not yes or no[0] == yes[0]:
        raise TrainerError("tokenizer: 'no' and 'yes' do not start with distinct tokens; cannot verbalise")
    return no[0], yes[0]


def answer_ids(tokenizer: Any, view: View, cfg: TrainerConfig) -> list[int]:
    """Assistant tokens: the label's tokens, then the rationale's, then EOS (the label first, so its first
    token is the one scored)."""
    ids = _ids(tokenizer, view.label or "")
    rest = answer_text(view, cfg)[len(view.label or "") :]
    if rest:
        ids += _ids(tokenizer, rest)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def prompt_ids(tokenizer: Any, view: View, cfg: TrainerConfig, budget: int) -> list[int]:
    """Prompt tokens with the context cut so the prompt has at most ``budget`` tokens (when it can)."""
    bare = replace(view, context="")
    fixed = len(_ids(tokenizer, prompt_text(tokenizer, chat_messages(bare, cfg, with_answer=False))))
    context = view.context
    room = budget - fixed - 8  # the "Context:" header and separators
    if context and room > 0:
        ctx = _ids(tokenizer, context)
        if len(ctx) > room:
            context = tokenizer.decode(ctx[:room])
    elif room <= 0:
        context = ""
    cut = replace(view, context=context)
    return _ids(tokenizer, prompt_text(tokenizer, chat_messages(cut, cfg, with_answer=False)))


def encode(tokenizer: Any, view: View, cfg: TrainerConfig, weights: Sequence[float] | None = None) -> dict[str, Any]:
    """input_ids / attention_mask / labels (answer tokens only) / weight of one training view."""
    answer = answer_ids(tokenizer, view, cfg)
    answer = answer[: max(1, cfg.max_length // 2)]
    prompt = prompt_ids(tokenizer, view, cfg, cfg.max_length - len(answer))
    weight = float(weights[view.label_id]) if weights is not None and view.label_id >= 0 else 1.0
    return {
        "input_ids": prompt + answer,
        "attention_mask": [1] * (len(prompt) + len(answer)),
        "labels": [IGNORE] * len(prompt) + answer,
        "weight": weight,
    }


class VerbalizerExamples:
    """Encoded chat examples as a map-style dataset (padding in `Collator`)."""

    def __init__(
        self, views: Sequence[View], tokenizer: Any, cfg: TrainerConfig, weights: Sequence[float] | None = None
    ) -> None:
        self.rows = [encode(tokenizer, v, cfg, weights) for v in views]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def left_pad(rows: Sequence[Sequence[int]], value: int, device: Any = None) -> Any:
    """``rows`` as one long tensor, each padded on the left with ``value`` to the longest."""
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([[value] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)


def positions(mask: Any) -> Any:
    """Position ids of left-padded rows: counted from each row's first real token (0 on padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class Collator:
    """Left-pads a batch (input ids with the pad id, labels with -100, the attention mask with 0)
    and numbers the real tokens' positions from 0: every row's answer ends the batch, so the
    loss needs logits for only the last few positions (`answer_span`)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        mask = left_pad([r["attention_mask"] for r in rows], 0)
        return {
            "input_ids": left_pad([r["input_ids"] for r in rows], self.pad_id),
            "attention_mask": mask,
            "position_ids": positions(mask),
            "labels": left_pad([r["labels"] for r in rows], IGNORE),
            "weight": torch.tensor([float(r.get("weight", 1.0)) for r in rows], dtype=torch.float32),
        }


def answer_loss(logits: Any, labels: Any, weight: Any) -> Any:
    """Per example the mean cross-entropy over its answer tokens; the batch's weighted mean of those."""
    import torch

    shifted = logits[:, :-1, :].float()
    target = labels[:, 1:]
    token = torch.nn.functional.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(target.shape)
    mask = (target != IGNORE).float()
    per_example = (token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    weight = weight.to(per_example.device)
    return (per_example * weight).sum() / weight.sum().clamp(min=1e-12)


def answer_span(labels: Any) -> int:
    """How many trailing positions' logits the loss needs: from the one that predicts the batch's
    earliest answer token to the end (left-padded rows end with their answers)."""
    width = int(labels.shape[1])
    answered = (labels != IGNORE).any(dim=1)
    if not bool(answered.any()):
        return width
    return min(width, width - int(first_answer_positions(labels)[answered].min()) + 1)


def first_answer_positions(labels: Any) -> Any:
    """Index of each row's first answer token (the position right after its prompt)."""
    import torch

    answer = labels != IGNORE
    return torch.argmax(answer.int(), dim=1)


def make_pick_scores(no_id: int, yes_id: int) -> Any:
    """``preprocess_logits_for_metrics``: keep only the (no, yes) log-probs predicted for the first answer token."""
    import torch

    def pick(logits: Any, labels: Any) -> Any:
        if isinstance(logits, tuple):
            logits = logits[0]
        pos = first_answer_positions(labels) - 1 - (labels.shape[1] - logits.shape[1])  # logits of the last positions
        rows = logits[torch.arange(logits.shape[0], device=logits.device), pos].float()
        return torch.log_softmax(rows, dim=-1)[:, [no_id, yes_id]]

    return pick


def make_view_scores(yes_id: int) -> Any:
    """Per-view (no, yes) scores and gold from the evaluation output; gold is read off the first answer token."""

    def scores_and_gold(eval_pred: Any) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = eval_pred
        labels = np.asarray(labels)
        first = np.argmax(labels != IGNORE, axis=1)
        return np.asarray(scores), (labels[np.arange(len(labels)), first] == yes_id).astype(int)

    return scores_and_gold


def make_trainer_class() -> type:
    """A Trainer whose loss is `answer_loss` with per-example class weights."""
    from transformers import Trainer

    class VerbalizerTrainer(Trainer):
        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            labels = inputs.pop("labels")
            weight = inputs.pop("weight")
            keep = answer_span(labels)  # batch x keep x vocab logits, not batch x length x vocab
            outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
            loss = answer_loss(outputs.logits, labels[:, -keep:], weight)
            return (loss, {"logits": outputs.logits}) if return_outputs else loss

    return VerbalizerTrainer


def verbalizer_scores(model: Any, tokenizer: Any, views: Sequence[View], cfg: TrainerConfig) -> np.ndarray:
    """(n_views x 2) log-probabilities of the first "no" and "yes" token after each view's prompt."""
    import torch
    from tqdm import tqdm

    out = np.zeros((len(views), len(LABELS)), dtype=np.float32)
    if not views:
        return out
    no_id, yes_id = label_token_ids(tokenizer)
    answer_room = len(answer_ids(tokenizer, views[0], cfg.model_copy(update={"rationale": "none"})))
    prompts = [prompt_ids(tokenizer, v, cfg, cfg.max_length - answer_room) for v in views]
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    device = next(model.parameters()).device
    pad = int(tokenizer.pad_token_id)
    bar = tqdm(total=len(views), desc="scoring views", unit="view", disable=not sys.stderr.isatty())
    model.eval()
    with torch.inference_mode():
        for first in range(0, len(order), cfg.eval_batch_size):
            rows = order[first : first + cfg.eval_batch_size]
            # left-padded, so every row's last prompt token sits at the end and only that position's
            # logits are computed: batch x vocab, not batch x length x vocab (Gemma's vocab is 262k)
            ids = left_pad([prompts[i] for i in rows], pad, device)
            mask = left_pad([[1] * len(prompts[i]) for i in rows], 0, device)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False, logits_to_keep=1
            ).logits
            picked = torch.log_softmax(logits[:, -1].float(), dim=-1)
            out[rows] = picked[:, [no_id, yes_id]].cpu().numpy()
            bar.update(len(rows))
    bar.close()
    return out
