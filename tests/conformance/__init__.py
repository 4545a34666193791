"""One flow spec, run on every target, with the same output and the same accounting."""
