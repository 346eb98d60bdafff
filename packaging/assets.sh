#!/usr/bin/env bash
# Writes the files a package needs that the binary makes itself: shell completions and man
# pages (gzipped), under OUT_DIR/completions and OUT_DIR/man.
#
#   packaging/assets.sh BINARY [OUT_DIR]       (default OUT_DIR: target/assets)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$1"
out="${2:-$root/target/assets}"
rm -rf "$out/completions" "$out/man"
mkdir -p "$out/completions" "$out/man"
"$bin" completions bash >"$out/completions/ferry.bash"
"$bin" completions zsh >"$out/completions/_ferry"
"$bin" completions fish >"$out/completions/ferry.fish"
"$bin" man --dir "$out/man"
gzip -9n "$out"/man/*.1
