"""Provenance: invisible watermark, C2PA signing, content-addressed store, asset registry, verification."""
