import sys

from rebel.cli import main

sys.exit(main())
