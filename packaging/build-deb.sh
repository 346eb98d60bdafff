#!/usr/bin/env bash
# Builds the Debian package of ferry from a binary already built, with dpkg-deb alone (no
# cargo-deb, no debhelper): the binary, the shipped flows, lookups and schemas as examples
# under /usr/share/ferry, the systemd unit, /etc/ferry/ferry.env, completions and man pages
# (both made by the binary itself).
#
#   packaging/build-deb.sh [BINARY] [OUT_DIR]      (default: target/release/ferry, target/deb)
#
# Prints the path of the .deb it wrote. `cargo deb` builds the same layout from the
# [package.metadata.deb] section of Cargo.toml.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/release/ferry}"
out="${2:-$root/target/deb}"
[ -x "$bin" ] || { echo "build-deb: no executable at $bin (cargo build first)" >&2; exit 2; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)"
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$bin" "$stage/usr/bin/ferry"
strip "$stage/usr/bin/ferry" 2>/dev/null || true
for d in flows lookups schemas; do
  mkdir -p "$stage/usr/share/ferry/$d"
  cp -R "$root/$d/." "$stage/usr/share/ferry/$d/"
done
mkdir -p "$stage/usr/share/ferry/examples"
cp -R "$root/examples/connections" "$stage/usr/share/ferry/examples/"
install -D -m 0644 "$root/packaging/ferry.service" "$stage/usr/lib/systemd/system/ferry.service"
install -D -m 0640 "$root/packaging/ferry.env" "$stage/etc/ferry/ferry.env"
install -D -m 0644 "$root/README.md" "$stage/usr/share/doc/ferry/README.md"
# the guide the README links to, beside it, so that its relative links resolve in the package
mkdir -p "$stage/usr/share/doc/ferry/docs"
cp -R "$root/docs/." "$stage/usr/share/doc/ferry/docs/"

"$root/packaging/assets.sh" "$stage/usr/bin/ferry" "$stage/assets"
install -D -m 0644 "$stage/assets/completions/ferry.bash" "$stage/usr/share/bash-completion/completions/ferry"
install -D -m 0644 "$stage/assets/completions/_ferry" "$stage/usr/share/zsh/vendor-completions/_ferry"
install -D -m 0644 "$stage/assets/completions/ferry.fish" "$stage/usr/share/fish/vendor_completions.d/ferry.fish"
install -d "$stage/usr/share/man/man1"
install -m 0644 "$stage"/assets/man/*.1.gz "$stage/usr/share/man/man1/"
rm -rf "$stage/assets"

mkdir -p "$stage/DEBIAN"
install -m 0755 "$root"/packaging/debian/{postinst,prerm,postrm} "$stage/DEBIAN/"
echo /etc/ferry/ferry.env >"$stage/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: ferry
Version: $version
Architecture: $arch
Maintainer: ferry maintainers <ferry@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1, passwd
Section: net
Priority: optional
Description: declarative integration engine
 ferry runs integration flows described in YAML: it lists, fetches, transforms,
 invokes, renames and notifies, moving files and messages between FTP/SFTP,
 object storage (local, S3, OCI) and REST APIs. The package installs the binary,
 a systemd unit running "ferry serve" as the unprivileged user ferry, the shipped
 flows and lookups as examples in /usr/share/ferry, completions and man pages.
CONTROL
find "$stage" -type d -exec chmod 0755 {} +

mkdir -p "$out"
deb="$out/ferry_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
echo "$deb"
