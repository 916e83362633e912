"""Supernets (search) and final networks (evaluation)."""
