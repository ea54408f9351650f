"""The braze destination: spec, hook and emulator."""
