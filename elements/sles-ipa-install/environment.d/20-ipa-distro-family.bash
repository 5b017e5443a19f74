# shellcheck shell=bash
# Informational, as in the seed: the distribution family the agent is built for.
export IPA_DISTRO_FAMILY=suse
