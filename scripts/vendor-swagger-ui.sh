#!/usr/bin/env bash
# scripts/vendor-swagger-ui.sh — refreshes the Swagger UI files that /console/api
# is built from (src/http/console/assets/vendor/swagger-ui/), from the npm package
# swagger-ui-dist at the version pinned below, checked against its pinned integrity.
#
# Run it by hand to upgrade (change VERSION and INTEGRITY together, run it, run the
# console's browser test, commit the result); the build and the tests never run it:
# the files are committed, so a build needs no network and no npm.
#
# It fetches the package's tarball with `npm pack` (the package registry npm is
# configured for; no install scripts run: nothing is installed) and copies only what
# the console serves, unmodified, with the package's licence texts:
#
#   swagger-ui-bundle.js               the UI with its dependencies (React, swagger-client, …)
#   swagger-ui-bundle.js.LICENSE.txt   the licences of what the bundle holds
#   swagger-ui.css                     its styles (the console moves their inline data: images
#                                      to files of their own when serving them: see
#                                      src/http/console/apiref.rs)
#   LICENSE, NOTICE                    Swagger UI's licence (Apache-2.0) and notice
#
# Usage: scripts/vendor-swagger-ui.sh
set -euo pipefail

VERSION=5.35.0
INTEGRITY=sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==
FILES=(swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST="$ROOT/src/http/console/assets/vendor/swagger-ui"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
LIB_NAME=vendor-swagger-ui LIB_SELF=$ROOT/scripts/vendor-swagger-ui.sh

lib_have npm || lib_die "npm is missing." "Fix: apt-get install npm (scripts/browser.sh does), then rerun."
lib_have node || lib_die "node is missing." "Fix: apt-get install nodejs, then rerun."

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

lib_say "fetching swagger-ui-dist@$VERSION with npm pack ..."
(cd "$WORK" && npm pack "swagger-ui-dist@$VERSION" --json --loglevel=error >pack.json) ||
  lib_die "npm pack swagger-ui-dist@$VERSION failed (see above)." \
    "Fix: check that the package registry answers (npm config list), then rerun."
read -r tarball integrity < <(node -e '
  const [entry] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(entry.filename, entry.integrity);
' "$WORK/pack.json")
[[ $integrity == "$INTEGRITY" ]] ||
  lib_die "swagger-ui-dist@$VERSION has integrity $integrity, not the pinned $INTEGRITY." \
    "Fix: when upgrading, pin the new version's integrity (npm view swagger-ui-dist@VERSION dist.integrity)."

tar -xzf "$WORK/$tarball" -C "$WORK"
packed=$(node -p 'require(process.argv[1]).version' "$WORK/package/package.json")
[[ $packed == "$VERSION" ]] || lib_die "the tarball holds version $packed, not $VERSION."

rm -rf "$DEST"
mkdir -p "$DEST"
for file in "${FILES[@]}"; do
  [[ -f $WORK/package/$file ]] || lib_die "swagger-ui-dist@$VERSION has no $file."
  cp "$WORK/package/$file" "$DEST/$file"
done
cat >"$DEST/README.md" <<EOF
# Swagger UI, vendored

swagger-ui-dist $VERSION ($INTEGRITY), unmodified: ${FILES[*]}.

Refreshed by \`scripts/vendor-swagger-ui.sh\` (the version is pinned there); served by
\`src/http/console/apiref.rs\` at \`/console/assets/api/\` for the console's \`/console/api\`.
Swagger UI is Apache-2.0 (LICENSE, NOTICE); the licences of what its bundle holds are in
swagger-ui-bundle.js.LICENSE.txt.
EOF
lib_say "swagger-ui-dist $VERSION in ${DEST#"$ROOT"/}: $(du -sh "$DEST" | cut -f1)"
