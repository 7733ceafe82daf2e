import sys

from auroraops.cli import main

sys.exit(main())
