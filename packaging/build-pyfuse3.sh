#!/usr/bin/env bash
# Installs pyfuse3 3.5.0 into the venv VENV, built from its PyPI source with packaging/pyfuse3.patch:
# the kernel's adaptive READDIRPLUS (find and ls -f list with plain READDIR, so the kernel and the
# mount keep no inode per listed name, and a plain batch is replied in one call), listings the kernel caches (an opendir may return a
# FileInfo with `cache_readdir`), fallocate(2), and a request loop that polls about 100 us for a
# client's next request before it goes back to the event loop, and FUSE_HANDLE_KILLPRIV_V2 for a
# file system that drops setuid and setgid itself (libfuse 3.14 cannot ask for it; the INIT reply
# gets it on its way out), so the kernel stops asking for security.capability before every
# write. All leave pyfuse3's API as it was;
# pfsfuse runs on an unpatched pyfuse3 too, without them.
# Needs gcc, pkg-config, libfuse3-dev and patch. Idempotent: a second run only checks.
set -euo pipefail
venv=$1
here=$(cd "$(dirname "$0")" && pwd)
version=3.5.0
sha256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
local_version="$version+pfsfuse.$(sha256sum "$here/pyfuse3.patch" | cut -c1-8)"

if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pyfuse3"))' 2>/dev/null)" = "$local_version" ]; then
  echo "note: pyfuse3 $local_version is installed"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/pip" download -q --no-deps --no-binary pyfuse3 -d "$work" "pyfuse3==$version"
echo "$sha256  $work/pyfuse3-$version.tar.gz" | sha256sum -c --quiet
tar xzf "$work/pyfuse3-$version.tar.gz" -C "$work"
src="$work/pyfuse3-$version"
patch -s -p1 -d "$src" < "$here/pyfuse3.patch"
rm "$src/src/pyfuse3/__init__.c"  # made again by Cython from the patched sources
SETUPTOOLS_SCM_PRETEND_VERSION="$local_version" "$venv/bin/pip" install -q --no-deps "$src"
echo "note: pyfuse3 $local_version built and installed"
