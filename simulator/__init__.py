"""A local stand-in for Klaviyo\x27s API: the test double and the sandbox behind `make dev`."""
