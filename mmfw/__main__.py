"""``python -m mmfw`` (used by ``accelerate launch -m mmfw``)."""

import sys

from mmfw.cli.main import main

sys.exit(main())
