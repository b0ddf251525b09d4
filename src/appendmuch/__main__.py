"""``python -m appendmuch``."""

import sys

from .cli import main

sys.exit(main())
