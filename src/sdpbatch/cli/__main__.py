"""``python -m sdpbatch.cli``: the command line."""

import sys

from sdpbatch.cli import main

sys.exit(main())
