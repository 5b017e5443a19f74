# shellcheck shell=bash
# Defaults of the IPA element; a value given by the builder or the user wins.

# Firmware directories (under /lib/firmware and /usr/lib/firmware) dropped from the ramdisk:
# GPUs, Wi-Fi and SoCs a bare-metal agent never drives. Comma separated.
export IPA_REMOVE_FIRMWARE=${IPA_REMOVE_FIRMWARE-amdgpu,netronome,qcom,ti-communication,ti-keystone,ueagle-atm,rsi,mrvl,brcm,mediatek,ath10k,rtlwifi}
# Rescue mode units (true/false, yes/no, 1/0).
export DIB_IPA_ENABLE_RESCUE=${DIB_IPA_ENABLE_RESCUE:-true}
# Install ironic-lib from the cloned source over the release pip picks for IPA.
export IRONIC_LIB_FROM_SOURCE=${IRONIC_LIB_FROM_SOURCE:-false}
