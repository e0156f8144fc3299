"""Clients for chatd."""
