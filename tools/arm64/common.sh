# shellcheck shell=bash disable=SC2034  # (the variables are used by the scripts that source this)
# Shared by tools/arm64/*: where the Debian arm64 tree and its virtualenv live, and how a
# program of that tree runs on this (x86-64) machine. Sourced, not run.
#
# qemu-user runs one aarch64 Linux process; QEMU_LD_PREFIX (qemu's -L) makes the tree the
# root for the dynamic loader and the libraries it opens. A path missing from the tree is
# looked up on the host instead, so the tree must hold every library its programs load.
# No binfmt_misc registration is needed: nothing run here starts another aarch64 program.
arm64_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ARM64_DIR=${EDGETUNE_ARM64_DIR:-$arm64_repo/build/arm64}
ARM64_TREE=$ARM64_DIR/tree
ARM64_VENV=$ARM64_TREE/opt/edgetune-venv
ARM64_HOST=$ARM64_DIR/host  # a venv of this machine's Python: a current pip, auditwheel
ARM64_SUITE=${EDGETUNE_ARM64_SUITE:-trixie}
ARM64_MIRROR=${EDGETUNE_ARM64_MIRROR:-http://deb.debian.org/debian}
# The CPU qemu presents: a Cortex-A72 (Raspberry Pi 4) has NEON and none of the later
# extensions (SVE, dot product), so numpy and onnxruntime take the paths they take on a Pi 4
# rather than the ones qemu's default "max" CPU would offer them. make-env writes the tree's
# /proc/cpuinfo to match (see there).
export QEMU_LD_PREFIX=$ARM64_TREE
export QEMU_CPU=cortex-a72

arm64_die() { echo "tools/arm64: $*" >&2; exit 1; }

# Install Debian packages this machine lacks (as root with apt-get), saying so; else stop
# with the command to run.
arm64_need_debs() {
  local missing=() pkg
  for pkg in "$@"; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "+ apt-get install -y ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    arm64_die "missing Debian packages: sudo apt-get install ${missing[*]}"
  fi
}

arm64_need_tree() {
  [ -x "$ARM64_VENV/bin/python" ] || arm64_die "no arm64 environment in $ARM64_DIR: run tools/arm64/make-env first"
}
