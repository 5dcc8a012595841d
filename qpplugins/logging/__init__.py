"""Stock logging plugins."""
