"""Delivery: the artifacts with their atomic commit, the SBOM, signed sums, OCI publishing, add-on cpios."""
