import sys

from genmodels.cli import main

sys.exit(main())
