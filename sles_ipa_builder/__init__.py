"""Build Ironic Python Agent ramdisks from SUSE Linux Enterprise media, without diskimage-builder."""

__version__ = "0.1.0"
