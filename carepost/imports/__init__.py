"""Bulk contact imports: CSV and FHIR R4 sources, resumable jobs, per-row error reports."""
