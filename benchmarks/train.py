"""Trainer benchmark: honest held-out macro F1 of the QLoRA yes/no classifier, beside baselines.

The BioASQ file is split by question id (seeded, stratified, 20% test, 10% valid) before
any augmentation. Variants, all QLoRA (NF4) on the packaged all-MiniLM-L6-v2:

1. snippets only                     (prompt = question + snippets, no augmentation)
2. snippets only + augmentation      (rare class gets one extra view per snippet)
3. snippets + retrieved context      (prompt adds the top chunks of the question's own
4. ... + augmentation                 documents from ``--index``)

Variants 3/4 are trained only when some question actually has retrieved context; offline
the BioASQ documents are in no local store, and the output says so instead of repeating
variants 1/2. Beside the model: the all-yes, nearest-neighbour and TF-IDF classifier (word 1-2 grams,
logistic regression) baselines on the same test questions. Speed: training
examples/second of QLoRA against plain LoRA (``quant=none``, the named peer) on the same
batches, and peak resident memory of each.

Usage: python benchmarks/train.py --bioasq training12b_yesno.json [--index data/index]
       [--pubmedqa ori_pqal_dev500.json] [--epochs 3] [--max-length 128] [--out runs/bench-train]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import TrainerConfig  # noqa: E402
from trainer.questions import Question, load_bioasq, load_pubmedqa  # noqa: E402


def base_config(args: argparse.Namespace, folder: Path, **values: Any) -> TrainerConfig:
    cfg: dict[str, Any] = {
        "splits": folder / "splits",
        "out": folder / "run",
        "index": args.index,
        "test_fraction": 0.2,
        "valid_fraction": 0.1,
        "seed": args.seed,
        "max_length": args.max_length,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "max_snippets_per_question": args.aug_snippets,
        "early_stopping_patience": 2,
        "resume": False,
        "bootstrap": 1000,
        "threads": args.threads,
    }
    cfg.update(values)
    return TrainerConfig.model_validate(cfg)


def fmt(m: dict[str, Any]) -> str:
    lo, hi = m["macro_f1_ci"]
    return (
        f"macro F1 {m['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]  acc {m['accuracy']:.3f}  "
        f"F1-yes {m['f1_yes']:.3f}  F1-no {m['f1_no']:.3f}"
    )


def run_variant(name: str, questions: list[Question], cfg: TrainerConfig) -> dict[str, Any]:
    from trainer.evaluate import score, view_logits
    from trainer.fit import fit
    from trainer.model import load_trained
    from trainer.splits import build_splits, read_split

    report = build_splits(questions, cfg)
    result = fit(cfg)
    model, tokenizer, _ = load_trained(cfg.out)
    test = read_split(cfg.splits, "test")
    started = time.perf_counter()
    logits = view_logits(model, tokenizer, test, cfg.max_length, cfg.eval_batch_size)
    predict_s = time.perf_counter() - started
    scored = score(test, logits, read_split(cfg.splits, "train"), cfg, Path(cfg.out))
    out = {
        "variant": name,
        "train_views": result.train_examples,
        "train_questions": sum(report.questions["train"].values()),
        "steps": result.steps,
        "fit_seconds": round(result.seconds, 1),
        "train_examples_per_s": round(result.examples_per_second, 2),
        "peak_rss_mib_so_far": round(result.peak_memory_mb),
        "best_valid": result.best_valid,
        "test_predict_views_per_s": round(len(test) / predict_s, 1),
        "test": scored.as_dict(),
        "retrieval": report.retrieval,
    }
    print(f"[{name}] {result.line()}", flush=True)
    print(f"[{name}] test {scored.questions} questions: model {fmt(scored.model)}", flush=True)
    return out


def throughput(args: argparse.Namespace, folder: Path, quant: str, steps: int, splits: Path) -> tuple[float, float]:
    """(training examples/second, peak RSS MiB of a child process) for ``steps`` steps at the benchmark's shape."""
    import subprocess

    code = (
        f"import json,sys,time; sys.path.insert(0, {str(REPO)!r})\n"
        "from trainer.config import TrainerConfig\n"
        "from trainer.fit import fit\n"
        "cfg = TrainerConfig.model_validate(json.loads(sys.argv[1]))\n"
        "r = fit(cfg); print('RESULT', r.examples_per_second, r.peak_memory_mb)\n"
    )
    cfg = base_config(
        args,
        folder / f"speed-{quant}",
        splits=splits,
        quant=quant,
        max_steps=steps,
        eval_steps=10_000,
        early_stopping_patience=0,
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg.model_dump(mode="json"))], capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if proc.returncode or not lines:
        raise RuntimeError(f"throughput run ({quant}) failed: {proc.stderr[-500:]}")
    _, eps, peak = lines[-1].split()
    return float(eps), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bioasq", type=Path, required=True, help="BioASQ training file (yes/no questions used).")
    parser.add_argument("--index", type=Path, default=None, help="Index for retrieved context (default: none).")
    parser.add_argument("--pubmedqa", type=Path, default=None, help="Also run a PubMedQA variant (own abstracts).")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--aug-snippets", type=int, default=3, help="One-snippet views per augmented question.")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--speed-steps", type=int, default=12)
    parser.add_argument("--skip-aug", action="store_true", help="Skip the augmentation variants.")
    parser.add_argument("--variants", default="snippets,snippets+aug", help="Snippet variants to train (comma list).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    questions = load_bioasq(args.bioasq)
    print(f"BioASQ: {len(questions)} yes/no questions from {args.bioasq}; split by id, seed {args.seed}, 20% test")
    results: list[dict[str, Any]] = []
    known = {
        "snippets": {"prompt_parts": ["snippets"], "augment": "none", "retrieve_k": 0},
        "snippets+aug": {"prompt_parts": ["snippets"], "augment": "rare", "retrieve_k": 0},
    }
    chosen = [v for v in args.variants.split(",") if v and not (args.skip_aug and v.endswith("+aug"))]
    variants = [(name, known[name]) for name in chosen]
    for name, values in variants:
        results.append(run_variant(name, questions, base_config(args, args.out / name, **values)))
    # Retrieved context: only trained when the index gives some question context.
    from trainer.retrieval import retrieve

    probe = retrieve(questions, base_config(args, args.out / "probe", prompt_parts=["snippets", "documents"]))
    summary = probe.summary()
    print(
        f"retrieval corpus: {summary['corpus'] or 'none (no index given or found)'}; "
        f"{summary['questions_with_retrieved_context']} of {len(questions)} questions have retrieved context; "
        f"{summary['missing_documents']} distinct documents missing from the index"
    )
    if summary["questions_with_retrieved_context"]:
        for name, augment in [("snippets+retrieved", "none"), ("snippets+retrieved+aug", "rare")][
            : 1 + any(n.endswith("+aug") for n, _ in variants)
        ]:
            cfg = base_config(args, args.out / name, prompt_parts=["snippets", "documents"], augment=augment)
            results.append(run_variant(name, questions, cfg))
    else:
        print("snippets+retrieved(+aug): not trained - with no retrieved context their inputs equal snippets(+aug)")
    if args.pubmedqa is not None:
        pqa = load_pubmedqa(args.pubmedqa)
        cfg = base_config(args, args.out / "pubmedqa", prompt_parts=["snippets"], augment="none", retrieve_k=0)
        results.append(run_variant("pubmedqa (own abstract as context)", pqa, cfg))
    splits_for_speed = args.out / variants[0][0] / "splits"
    qlora_eps, qlora_mem = throughput(args, args.out, "nf4", args.speed_steps, splits_for_speed)
    lora_eps, lora_mem = throughput(args, args.out, "none", args.speed_steps, splits_for_speed)
    print()
    print(f"=== test split: {results[0]['test']['questions']} BioASQ questions (macro F1 [bootstrap 95% CI]) ===")
    first = results[0]["test"]
    for name, m in first["baselines"].items():
        print(f"  {name:34s} {fmt(m)}")
    for r in results:
        print(f"  {'QLoRA ' + r['variant']:34s} {fmt(r['test']['model'])}")
        if r["variant"].startswith("pubmedqa"):
            for name, m in r["test"]["baselines"].items():
                print(f"  {'  pubmedqa ' + name:34s} {fmt(m)}")
    print()
    print(f"=== speed at max_length {args.max_length}, batch {args.batch_size}, {args.speed_steps} steps ===")
    print(f"  QLoRA nf4 : {qlora_eps:6.2f} training examples/s, peak RSS {qlora_mem:.0f} MiB")
    print(f"  plain LoRA: {lora_eps:6.2f} training examples/s, peak RSS {lora_mem:.0f} MiB (peer)")
    print(f"  ratio QLoRA / plain LoRA: {qlora_eps / lora_eps:.2f}x speed, {qlora_mem / lora_mem:.2f}x memory")
    for r in results:
        print(
            f"  {r['variant']}: {r['train_views']} training views, {r['steps']} steps in {r['fit_seconds']}s "
            f"({r['train_examples_per_s']} ex/s incl. contention), test scoring {r['test_predict_views_per_s']} views/s"
        )
    best = max(r["test"]["model"]["macro_f1"] for r in results if not r["variant"].startswith("pubmedqa"))
    nn = max(m["macro_f1"] for k, m in first["baselines"].items() if k.startswith("nearest"))
    words = max(m["macro_f1"] for k, m in first["baselines"].items() if k.startswith("TF-IDF"))
    print(
        f"target macro F1 >= 0.80: best BioASQ variant {best:.3f} ({best - 0.80:+.3f}); "
        f"margin over NN {best - nn:+.3f}, over TF-IDF {best - words:+.3f}"
    )
    print(f"total {time.perf_counter() - started:.0f}s")
    from store.atomic import atomic_write_json

    atomic_write_json(args.out / "benchmark.json", {"results": results, "speed": [qlora_eps, lora_eps]})


if __name__ == "__main__":
    main()
