"""The customerio destination: spec, hook and emulator."""
