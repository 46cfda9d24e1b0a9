"""Tasks that put a learned encoder to work; each accepts any encoder (or baseline features)."""
