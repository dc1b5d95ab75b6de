import sys

from raddraft.cli import main

sys.exit(main())
