# shellcheck shell=bash
# Distribution variables of the SLES base. Sourced before every phase, so it must not exit or
# fail under `set -u`. Everything a user may want to change keeps a value given from outside.

# pkg-map and svc-map of DIB elements look up the "opensuse" distro (family "suse").
export DISTRO_NAME=opensuse
# The agent unit and every enable below are systemd; no other init system is supported.
export DIB_INIT_SYSTEM=systemd

export DIB_SLES_RELEASE=${DIB_SLES_RELEASE:-SLE-15}
export DIB_SLES_SERVICE_PACK=${DIB_SLES_SERVICE_PACK:-SP4}
export DIB_SLES_INSTALL_TYPE=${DIB_SLES_INSTALL_TYPE:-Minimal-VM}
export DIB_SLES_IMAGE_TARGET_PLATFORM=${DIB_SLES_IMAGE_TARGET_PLATFORM:-OpenStack-Cloud-GM}
export DIB_SLES_OFFLINE_TARGET_DIR=${DIB_SLES_OFFLINE_TARGET_DIR:-${HOME:-/root}/sles_images}
export DIB_SLES_ISO_REPO_FILE=${DIB_SLES_ISO_REPO_FILE:-${DIB_SLES_RELEASE}-${DIB_SLES_SERVICE_PACK}-Full-x86_64-GM-Media1.iso}

# DIB_RELEASE is the release key of pkg-map: "15.4" for SLE-15 SP4 (the Leap numbering).
_sles_major=${DIB_SLES_RELEASE##*-}
_sles_sp=${DIB_SLES_SERVICE_PACK#[Ss][Pp]}
export DIB_RELEASE=${DIB_RELEASE:-${_sles_major}.${_sles_sp:-0}}
unset _sles_major _sles_sp

# The interpreter of the IPA venv: SP4 and older ship python3.10, SP5 and later python3.11.
if [ -z "${DIB_SLES_PYTHON:-}" ]; then
    case "$DIB_SLES_SERVICE_PACK" in
        SP[1-4] | sp[1-4]) DIB_SLES_PYTHON=python3.10 ;;
        *) DIB_SLES_PYTHON=python3.11 ;;
    esac
fi
export DIB_SLES_PYTHON
