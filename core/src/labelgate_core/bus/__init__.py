"""The message bus port and its adapters."""
