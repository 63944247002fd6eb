"""The metadata engine: turns tenant metadata into compiled definitions,
table definitions and validation schemas. It keeps no global state."""
