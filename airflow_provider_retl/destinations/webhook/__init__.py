"""The webhook destination: spec, hook and emulator."""
