"""Data Loss Prevention: validated detectors of PHI and other sensitive identifiers,
message scans that record where and how sure, never what (see docs/dlp.md)."""
