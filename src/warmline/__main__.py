"""``python -m warmline``: the CLI (importing this module runs nothing)."""

import sys

from warmline.cli import main

if __name__ == "__main__":
    sys.exit(main())
