"""`python -m store` runs the `store` command."""

from store.cli import main

main()
