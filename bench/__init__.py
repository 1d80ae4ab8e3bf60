"""carepost benchmarks and data generators (``make bench``)."""
