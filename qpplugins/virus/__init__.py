"""Stock virus scanners."""
