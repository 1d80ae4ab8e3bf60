"""Open and click tracking: signed, opaque tokens, public pixel and redirect routes."""
