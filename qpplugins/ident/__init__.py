"""Stock identification plugins: where a client is (GeoIP) and what it runs (p0f)."""
