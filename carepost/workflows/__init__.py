"""Automated workflows: journeys of steps contacts move through (docs/workflows.md)."""
