"""StacNAS: two-stage search (categories, then operations). Not implemented yet."""
