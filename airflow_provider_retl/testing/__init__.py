"""Test kit shipped with the provider: local emulators of destination APIs.

Nothing here is imported by the provider at runtime; the emulators need the
``emulators`` extra (fastapi, uvicorn, httpx).
"""
