"""The package version, in one place (read by saved adapters and exported scripts)."""

__version__ = "0.1.0"
