"""`python -m frugalml` is the CLI."""

from frugalml.cli import main

main()
