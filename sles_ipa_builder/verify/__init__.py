"""Verification: QEMU, the quick boot test against a fake Ironic API, a real Ironic lifecycle, metal3-dev-env."""
