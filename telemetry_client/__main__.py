"""``python -m telemetry_client`` == ``telemetry-client``."""

import sys

from .cli import main

sys.exit(main())
