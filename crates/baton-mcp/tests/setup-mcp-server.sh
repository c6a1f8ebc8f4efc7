#!/usr/bin/env bash
# Install the MCP reference server the baton-mcp tests talk to.
#
# Installs a pinned version of @modelcontextprotocol/server-everything with npm into
# $BATON_MCP_SERVER_DIR (default: $HOME/.cache/baton/mcp-servers). Idempotent: does nothing when
# that version is already installed there. The tests read the same variable.
set -euo pipefail

VERSION="2026.8.31"
PACKAGE="@modelcontextprotocol/server-everything"
DIR="${BATON_MCP_SERVER_DIR:-$HOME/.cache/baton/mcp-servers}"
ENTRY="$DIR/node_modules/$PACKAGE/dist/index.js"
PKG_JSON="$DIR/node_modules/$PACKAGE/package.json"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "setup-mcp-server: node and npm are needed (apt-get install nodejs npm)" >&2
    exit 1
fi

if [ -f "$ENTRY" ] && [ -f "$PKG_JSON" ] \
    && [ "$(node -p "require('$PKG_JSON').version" 2>/dev/null)" = "$VERSION" ]; then
    echo "setup-mcp-server: $PACKAGE@$VERSION already installed in $DIR"
    exit 0
fi

mkdir -p "$DIR"
# A package.json of its own, so npm installs here and not into an enclosing project.
if [ ! -f "$DIR/package.json" ]; then
    echo '{"name": "baton-mcp-test-servers", "private": true}' > "$DIR/package.json"
fi
npm install --prefix "$DIR" --no-audit --no-fund --save-exact "$PACKAGE@$VERSION"
test -f "$ENTRY"
echo "setup-mcp-server: installed $PACKAGE@$VERSION in $DIR"
