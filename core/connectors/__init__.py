"""Ready connectors. Each module is one connector family; see :mod:`active_data_flow.registry` for the type names."""
