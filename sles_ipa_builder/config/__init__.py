"""Configuration: the settings table, the resolved Config, architectures, service packs."""
