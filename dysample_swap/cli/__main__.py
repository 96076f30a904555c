"""``python -m dysample_swap.cli ...`` (what ``torchrun -m dysample_swap.cli`` runs): the ``dysample-swap`` command."""

import sys

from dysample_swap.cli import main

if __name__ == "__main__":
    sys.exit(main())
