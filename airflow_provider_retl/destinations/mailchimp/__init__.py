"""The mailchimp destination: spec, hook and emulator."""
