#!/bin/bash
# Runs at boot in the ramdisk (ironic-agent-create-rescue-user.service) once the agent has
# written the crypted rescue password: creates the user "rescue" with passwordless sudo.
# No xtrace: the password hash must not reach the journal.

set -eu
set -o pipefail

password_file=/etc/ipa-rescue-config/ipa-rescue-password
crypted=$(head -n 1 "$password_file")
if [ -z "$crypted" ]; then
    echo "error: $password_file is empty" >&2
    exit 1
fi

groups=()
if getent group wheel >/dev/null; then
    groups=(-G wheel)
fi
if ! id rescue >/dev/null 2>&1; then
    useradd -m "${groups[@]}" rescue
fi
# Through stdin, not argv: no other process can read the hash from /proc.
printf 'rescue:%s\n' "$crypted" | chpasswd -e

sudoers=/etc/sudoers.d/rescue
mkdir -p /etc/sudoers.d
umask 0337
printf 'rescue ALL=(ALL) NOPASSWD: ALL\n' >"$sudoers.tmp"
chmod 0440 "$sudoers.tmp"
mv -f "$sudoers.tmp" "$sudoers"
