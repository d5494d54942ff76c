"""Labelgate core: events, ports and adapters, settings and observability shared by every service."""
