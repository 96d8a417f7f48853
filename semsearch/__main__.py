"""Allow ``python -m semsearch``."""

from semsearch.cli import main

main()
