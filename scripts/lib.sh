# shellcheck shell=bash
# Shared by scripts/test and scripts/demo (sourced, not run).

# Re-run the calling script as root: directly when we are root, through sudo (keeping the
# environment and PATH, so the same python3 and kubectl are used) when sudo exists, and
# otherwise stop with what to do.  Usage: become_root "$0" "$@"
become_root() {
  [ "$(id -u)" = 0 ] && return 0
  local self
  self=$(readlink -f "$1")
  shift
  if command -v sudo >/dev/null 2>&1; then
    echo "$(basename "$self"): not root: re-running through sudo (network namespaces, Docker, the local cluster)" >&2
    exec sudo --preserve-env env "PATH=$PATH" "$self" "$@"
  fi
  echo "$(basename "$self"): needs root (network namespaces, Docker, the local cluster) and there is no sudo: run it in a root shell" >&2
  exit 2
}

# scripts/setup makes .venv when the system Python is managed by Debian (PEP 668).
use_checkout_venv() {
  if [ -x .venv/bin/python3 ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
}
