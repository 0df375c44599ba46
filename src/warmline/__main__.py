import sys

from warmline.cli import main

sys.exit(main())
