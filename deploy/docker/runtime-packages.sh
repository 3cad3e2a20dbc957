#!/usr/bin/env bash
# runtime-packages.sh BINARY...: prints the Debian/Ubuntu packages that hold the shared libraries
# the binaries load (one per line, sorted). The build stage of each Dockerfile writes this list;
# the runtime stage installs exactly it, so the small image follows whatever the binaries link.
# Libraries that no package owns (the CUDA driver's libcuda, injected by the NVIDIA container
# toolkit at run time) are skipped with a note on stderr.
set -euo pipefail

owner() {  # the package owning exactly this path ("" if none)
  { dpkg -S "$1" 2>/dev/null || true; } | awk -v p="$1" -F': ' '$2 == p {sub(/:.*/, "", $1); n = $1} END {print n}'
}

for bin in "$@"; do
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  real="$(readlink -f "$lib")"
  pkg=""
  # Merged /usr: a file may be recorded under /lib or /usr/lib; try the path as loaded, the
  # resolved file, and both spellings of each.
  for p in "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}"; do
    pkg="$(owner "$p")"
    [ -n "$pkg" ] && break
  done
  if [ -n "$pkg" ]; then
    echo "$pkg"
  else
    echo "runtime-packages: no package owns $lib (skipped)" >&2
  fi
done | sort -u
