"""``python -m telemetry_client`` == ``telemetry-client``."""

import sys

from telemetry_client.cli.main import main

sys.exit(main())
