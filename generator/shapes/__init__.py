"""The shapes world: a procedural, objectively checkable text-to-image world (see shapes-world.md)."""
