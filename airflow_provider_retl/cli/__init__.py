"""The ``airflow retl`` command group (registered through the provider info's ``cli`` key)."""
