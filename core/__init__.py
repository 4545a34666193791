"""ActiveDataFlow's engine: records, sources, steps, sinks and the run (standard library only)."""

__version__ = "0.1.0"
