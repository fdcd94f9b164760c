import sys

from lightbrain.cli import main

sys.exit(main())
