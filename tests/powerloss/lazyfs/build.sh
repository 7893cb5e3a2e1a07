#!/usr/bin/env bash
# Build LazyFS, the FUSE file system the power-loss tests cut the power of, from the source
# tarball beside this script.
#
# usage: build.sh DEST     the binary's path is the last line printed
#
# DEST is a cache outside the checkout (the tests and .ci/run use
# ~/.cache/atomicfile/lazyfs): a build there is reused while it was made from this very
# tarball (its SHA-256 is recorded), so only the first run on a machine compiles (about a
# minute and a half on two cores). Two runs building at once wait for each other (flock).
# Installs nothing and mounts nothing: the Debian packages must be there already,
#   apt-get install fuse3 libfuse3-dev cmake g++ make libspdlog-dev libtoml11-dev
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tarball=$here/lazyfs-a47a5ba-patched.tar.gz
dest=${1:?usage: build.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
bin=$dest/lazyfs/build/lazyfs
exec 9>"$dest/.build.lock"
flock 9
sum=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ -x "$bin" ] && [ "$(cat "$dest/.source-sha256" 2>/dev/null)" = "$sum" ]; then
    echo "$bin"
    exit 0
fi

missing=""
for tool in cmake g++ make; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
for header in fuse3/fuse.h spdlog/spdlog.h toml.hpp; do
    [ -f "/usr/include/$header" ] || missing="$missing $header"
done
if [ -n "$missing" ]; then
    echo "build.sh: missing$missing: apt-get install fuse3 libfuse3-dev cmake g++ make libspdlog-dev libtoml11-dev" >&2
    exit 1
fi

rm -rf "$dest/lazyfs" "$dest/libs" "$dest/.source-sha256"
tar -xzf "$tarball" -C "$dest"
jobs=$(nproc 2>/dev/null || echo 2)
(cd "$dest/libs/libpcache" && mkdir -p build && cd build && cmake .. >/dev/null && cmake --build . -j"$jobs" >/dev/null)
(cd "$dest/lazyfs" && mkdir -p build && cd build && cmake -DLAZYFS_BUILD_TESTS=OFF .. >/dev/null && cmake --build . -j"$jobs" >/dev/null)
[ -x "$bin" ] || { echo "build.sh: no binary at $bin" >&2; exit 1; }
echo "$sum" > "$dest/.source-sha256"
echo "$bin"
