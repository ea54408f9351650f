"""The hubspot destination: spec, hook and emulator."""
