"""carepost: secure healthcare communications (email, text, forms) that never leak PHI."""

__version__ = "0.1.0"
