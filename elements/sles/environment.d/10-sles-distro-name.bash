# shellcheck shell=bash
# Distribution variables of the SLES base. Sourced before every phase, so it must not exit or
# fail under `set -u`. Everything a user may want to change keeps a value given from outside.

# pkg-map and svc-map of DIB elements look up the "opensuse" distro (family "suse").
export DISTRO_NAME=opensuse
# The agent unit and every enable below are systemd; no other init system is supported.
export DIB_INIT_SYSTEM=systemd

export DIB_SLES_RELEASE=${DIB_SLES_RELEASE:-SLE-15}
export DIB_SLES_SERVICE_PACK=${DIB_SLES_SERVICE_PACK-SP7}  # set but empty: a SLES 16 release, which has none
export DIB_SLES_INSTALL_TYPE=${DIB_SLES_INSTALL_TYPE:-Minimal-VM}
export DIB_SLES_IMAGE_TARGET_PLATFORM=${DIB_SLES_IMAGE_TARGET_PLATFORM:-OpenStack-Cloud-GM}
export DIB_SLES_OFFLINE_TARGET_DIR=${DIB_SLES_OFFLINE_TARGET_DIR:-${HOME:-/root}/sles_images}
# The release's facts (the ISO's name, DIB_RELEASE, the IPA venv's python: DIB_SLES_PYTHON, the network
# stack...) come from the builder, which exports them from its one table (sles_ipa_builder/config/releases.py).
