"""``python -m telemetry_client.collector`` == ``telemetry-collector``."""

import sys

from telemetry_client.collector import main

sys.exit(main())
