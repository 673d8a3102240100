"""``python -m telemetry_client.collector`` == ``telemetry-collector``."""

import sys

from . import main

sys.exit(main())
