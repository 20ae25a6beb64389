"""``python -m trainer`` runs the trainer CLI."""

from trainer.cli import main

main()
