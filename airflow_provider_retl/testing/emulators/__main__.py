"""``python -m airflow_provider_retl.testing.emulators``: see ``cli.py``."""

import sys

from airflow_provider_retl.testing.emulators.cli import main

sys.exit(main())
