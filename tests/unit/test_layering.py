"""The engine imports nothing from Airflow (it is testable and benchmarkable without it)."""

import subprocess
import sys


def test_importing_the_engine_pulls_in_no_airflow_module():
    code = (
        "import sys, airflow_provider_retl.sync.engine, airflow_provider_retl.sync.checkpoint;"
        "print([m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
