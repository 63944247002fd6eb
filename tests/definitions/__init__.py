"""Small definitions for the metadata engine tests, and builders for more."""
