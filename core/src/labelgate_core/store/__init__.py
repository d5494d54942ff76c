"""The document store port and its adapters."""
