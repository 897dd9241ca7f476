"""``python -m negforge``."""

from negforge.cli import main

main()
