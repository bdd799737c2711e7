"""`python -m recsys ...`: the same as the `recsys` command, for environments without it on PATH."""

from recsys.cli import main

main()
