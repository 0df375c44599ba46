"""``python -m warmline``. Guarded: a process started with multiprocessing's "spawn"
(the SIP trace writer's) imports this module again and must not run the CLI."""

import sys

from warmline.cli import main

if __name__ == "__main__":
    sys.exit(main())
