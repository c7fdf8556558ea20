# shellcheck shell=bash
# A Debian root filesystem from Debian packages with mmdebstrap, as a tarball for
# `docker import` (no container registry; packages verified with Debian's archive keyring, so
# plain-HTTP mirrors are enough).  Sourced by scripts/build-base-image and scripts/build-images.
#
#   debian_rootfs OUT.tar PACKAGES [MMDEBSTRAP ARGS...]
#       variant `essential` + PACKAGES (comma list), no docs/man/locales, apt caches removed;
#       extra arguments (e.g. --customize-hook=...) are passed to mmdebstrap.
# Environment: DEBIAN_SUITE (bookworm), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR (default: the
# first plain-HTTP Debian mirror in this machine's apt sources, else deb.debian.org).

# Prefer the Debian mirror this machine's apt already uses (first plain-HTTP URI for the
# Debian archive in /etc/apt/sources.list*), else deb.debian.org.
debian_detect_mirror() {
  local kind=$1  # debian | debian-security
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  grep -hoE "http://[^ ]+/${kind}/?( |$)" "${files[@]}" 2>/dev/null \
    | grep -vE '^#' | head -n1 | tr -d ' ' | sed 's:/$::'
}

debian_rootfs() {
  local out=$1 packages=$2
  shift 2
  command -v mmdebstrap >/dev/null || { echo "mmdebstrap not found (scripts/setup installs it)" >&2; return 1; }
  local suite=${DEBIAN_SUITE:-bookworm} mirror=${DEBIAN_MIRROR:-} security=${DEBIAN_SECURITY_MIRROR:-}
  [ -n "$mirror" ] || mirror=$(debian_detect_mirror debian)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  if [ -z "$security" ]; then
    security=$(debian_detect_mirror debian-security)
    [ -n "$security" ] || security=${mirror%/debian}/debian-security
  fi
  local sources=("deb $mirror $suite main")
  case "$suite" in
    sid|unstable) ;;
    *) sources+=("deb $mirror $suite-updates main" "deb $security $suite-security main") ;;
  esac
  # Merged /usr set up by mmdebstrap's hook (usr-is-merged) rather than by the usrmerge
  # package, which would drag full perl (~50 MB) into the image.
  local hooks=()
  if [ -d /usr/share/mmdebstrap/hooks/merged-usr ]; then
    hooks=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
  fi
  echo "debian-rootfs: $suite + $packages from $mirror (security: $security)" >&2
  # shellcheck disable=SC2016  # $1 is the root directory, expanded by mmdebstrap's hook shell
  mmdebstrap \
    --variant=essential \
    "${hooks[@]}" \
    --include="$packages" \
    --format=tar \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/lib/apt/lists/*' \
    "$@" \
    "$suite" "$out" "${sources[@]}" >&2
}
