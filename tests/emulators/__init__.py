"""Tests of the emulators in airflow_provider_retl.testing.emulators."""
