"""Stock queue plugins."""
