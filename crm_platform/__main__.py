"""Run the command line with ``python -m crm_platform``."""

from .cli import main

main()
