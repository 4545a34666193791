"""Ready connectors. Each module is one connector family; see :mod:`core.registry` for the type names."""
