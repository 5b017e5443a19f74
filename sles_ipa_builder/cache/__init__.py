"""Caches: directories and locks, the root-tree cache, and the cache layers (keys apart from keeping)."""
