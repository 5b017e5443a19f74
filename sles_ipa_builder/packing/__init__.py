"""Packing: the tree into a compressed initramfs (prune rules, cpio, compressors), and reading one back."""
