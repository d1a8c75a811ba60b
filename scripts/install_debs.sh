#!/usr/bin/env bash
# Install the Debian packages the project needs, only when missing; one line if impossible.
set -u
missing=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo -n"
echo "setup: installing Debian packages: ${missing[*]}"
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"; } >/tmp/apt-install.log 2>&1; then
  echo "setup: cannot install Debian packages ${missing[*]} (need root or sudo and apt; see /tmp/apt-install.log)" >&2
  exit 1
fi
