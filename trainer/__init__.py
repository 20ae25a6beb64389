"""Trainer stage: BioASQ/PubMedQA questions -> retrieved context -> augmented splits -> QLoRA classifier.

Modules, one job each: `config` (typed stage settings), `questions` (file loaders), `retrieval`
(context from the index), `views` (prompt and augmentation views), `splits` (split by question id,
Parquet output), `model` (base model, quantisation, LoRA), `fit` (training), `metrics`,
`baselines`, `evaluate` (eval and predict), `plots`, `tune` (Optuna) and `cli`.
"""

LABELS: tuple[str, str] = ("no", "yes")
"""Class names by label id: 0 = no, 1 = yes."""
