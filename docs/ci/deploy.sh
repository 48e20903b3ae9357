#!/bin/sh
# Deploy this folder to milkcrate; for any CI (or a git post-receive hook) that runs on push.
# Needs MILKCRATE_URL and MILKCRATE_TOKEN (a deploy token, ideally limited to this app).
# With the milkcrate binary:    milkcrate deploy . --app "$APP"
# Without it (curl only), as below: the same API the binary uses.
set -eu
: "${MILKCRATE_URL:?set MILKCRATE_URL, e.g. https://deploy.example.com}"
: "${MILKCRATE_TOKEN:?set MILKCRATE_TOKEN (Tokens page or milkcrate token create)}"
APP=${APP:-$(basename "$PWD")}
ROUTE=${ROUTE:-/$APP}
auth="Authorization: Bearer $MILKCRATE_TOKEN"

if command -v milkcrate >/dev/null 2>&1; then
  exec milkcrate deploy . --app "$APP" --route "$ROUTE"
fi

# A tar of the tracked files (git archive leaves out what is not committed).
tmp=$(mktemp) && trap 'rm -f "$tmp"' EXIT
git archive --format=tar -o "$tmp" HEAD

if curl -fsS -o /dev/null -H "$auth" "$MILKCRATE_URL/api/v1/apps/$APP"; then
  url="$MILKCRATE_URL/api/v1/apps/$APP/update?wait=true"
else
  url="$MILKCRATE_URL/api/v1/apps?app_name=$APP&public_route=$ROUTE&wait=true"
fi
answer=$(curl -sS -H "$auth" -H "Content-Type: application/x-tar" --data-binary "@$tmp" "$url")
echo "$answer"
case "$answer" in
  *'"status":"succeeded"'*) echo "Deployed $APP." ;;
  *) echo "Deploy of $APP failed (see the log at $MILKCRATE_URL/api/v1/deploys/<id>/log)." >&2; exit 1 ;;
esac
