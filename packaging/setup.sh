#!/usr/bin/env bash
# Sets up pfsfuse on a fresh Debian machine (as root): the system packages it needs, a venv in
# .venv with pfsfuse installed editable, and `pfs` on the PATH (a link in $PFS_BIN_DIR, by default
# /usr/local/bin). Idempotent: a second run only checks. The test toolchain is test-setup.sh's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
bin_dir=${PFS_BIN_DIR:-/usr/local/bin}
. "$root/packaging/steps.sh"

# The venv is made from the system's Python (python3-dev and python3-venv are for it), which every
# user can run: pipeline commands run as an unprivileged user and find python3 in the venv first,
# and one under a private home (pyenv in /root) would leave them with another python3.
python=${PFS_PYTHON:-/usr/bin/python3}
[ -x "$python" ] || python=python3

make_venv() {
  local want have
  want=$(dirname "$(command -v "$python")")
  if [ -x "$venv/bin/python" ]; then
    have=$(sed -n 's/^home = //p' "$venv/pyvenv.cfg")
    if [ "$have" = "$want" ]; then echo "note: $venv is there"; return; fi
    echo "note: $venv was made from the Python in $have: made again from $python"
    rm -rf "$venv"
  fi
  "$python" -m venv "$venv"
}

install_pyfuse3() {
  "$root/packaging/build-pyfuse3.sh" "$venv"
}

install_pfsfuse() {
  local stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
  if [ -f "$stamp" ]; then echo "note: up to date"; return; fi
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$root"
  touch "$stamp"
}

compile() {
  # Bytecode for our own modules, as a regular install has it: an editable install compiles them
  # only when first imported, and not at all where PYTHONDONTWRITEBYTECODE is set (30-40 ms a start).
  "$venv/bin/python" -m compileall -q "$root/metadata" "$root/pfsfuse" "$root/scheduler" "$root/tools"
}

link_pfs() {
  local link="$bin_dir/pfs"
  if [ "$(readlink "$link" 2>/dev/null)" = "$venv/bin/pfs" ]; then
    echo "note: $link -> $venv/bin/pfs"
    return
  fi
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "note: $link is another program: left alone; use $venv/bin/pfs"
    return
  fi
  if ! mkdir -p "$bin_dir" 2>/dev/null || [ ! -w "$bin_dir" ]; then
    echo "note: $bin_dir is not writable (run as root to link pfs there); meanwhile: export PATH=\"$venv/bin:\$PATH\""
    return
  fi
  ln -sfn "$venv/bin/pfs" "$link"
  echo "note: $link -> $venv/bin/pfs"
}

step "system packages: FUSE 3, and a C compiler and Python headers to build pyfuse3" \
  "$root/packaging/install-system-deps.sh"
step "Python environment in $venv" make_venv
step "pyfuse3, built with pfsfuse's patch (packaging/pyfuse3.patch)" install_pyfuse3
step "pfsfuse and its Python dependencies, installed editable" install_pfsfuse
step "bytecode of pfsfuse's modules" compile
step "pfs on the PATH of every shell" link_pfs
