"""Sync history tables (runs, row changelog, acknowledged rejects) and their reader API."""

from airflow_provider_retl.history.store import HistoryStore

__all__ = ["HistoryStore"]
