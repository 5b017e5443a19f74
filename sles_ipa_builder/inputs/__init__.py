"""Inputs: the base qcow2, the Media1 ISO, zypper repositories, git sources."""
