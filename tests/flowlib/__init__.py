"""Step functions and connectors used by the tests' flows (importable by reader processes)."""
