#!/bin/sh
# The peers orch is compared with, installed if missing: Debian's fail2ban
# (1.0.2 on Debian 12, with pyinotify for its fastest file backend) and
# fail2ban-rs 1.5.4 from crates.io (--no-default-features, so no MaxMind).
# Sourced by benches/jail-compare.sh; run it alone before
# `cargo bench --bench flood` (as root):
#
#   sh benches/peers.sh
#
# It only installs: it must not start, stop or configure the Debian
# fail2ban service, nor touch the firewall.
set -eu

f2brs=${FAIL2BAN_RS:-/opt/fail2ban-rs/bin/fail2ban-rs}
if ! command -v fail2ban-server >/dev/null || ! dpkg -s python3-pyinotify >/dev/null 2>&1; then
  apt-get install -y fail2ban python3-pyinotify
fi
[ -x "$f2brs" ] || cargo install fail2ban-rs --version 1.5.4 --no-default-features --root /opt/fail2ban-rs
