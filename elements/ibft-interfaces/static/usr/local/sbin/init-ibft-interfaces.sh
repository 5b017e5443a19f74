#!/bin/bash
# Runs at boot (init-ibft-interfaces.service): bring up the network interfaces the iSCSI boot
# firmware table (iBFT) describes, so a machine booted from iSCSI keeps its boot network.

set -eu
set -o pipefail

if [ ! -d /sys/firmware/ibft ]; then
    echo "init-ibft-interfaces: no iBFT on this machine"
    exit 0
fi
# Show the firmware's iSCSI boot configuration, then apply its network part.
iscsistart -f
iscsistart -N
udevadm settle
