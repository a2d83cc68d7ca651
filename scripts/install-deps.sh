#!/usr/bin/env bash
# Installs the system packages qvoice needs to build and test (Debian/Ubuntu): ALSA headers and pkg-config
# for cpal, libjack headers for cpal's native JACK client, cmake for the bundled libopus, tmux for the TUI test. Uses sudo when not root.
set -euo pipefail
pkgs=(libasound2-dev pkg-config cmake tmux)
# The NAT lab (scripts/nat-lab.sh): namespaces, NAT routers, conntrack flushing, the TURN relay, its checker.
pkgs+=(iproute2 nftables conntrack coturn python3)
pkgs+=(pulseaudio pulseaudio-utils libasound2-plugins jackd2 alsa-utils espeak-ng sox)
# Native JACK (cpal's `jack` feature): jack-sys finds libjack with pkg-config at build time.
pkgs+=(libjack-jackd2-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
