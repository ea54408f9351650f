"""The salesforce destination: spec, hook and emulator."""
