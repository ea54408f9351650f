"""The zendesk destination: spec, hook and emulator."""
