"""aigen: one prompt in, images and videos out, kept in a local SQLite store."""

__version__ = "0.1.0"
