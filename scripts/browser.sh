#!/usr/bin/env bash
# The real browser the page's tests drive (tests/test_page.py): Debian's chromium, through playwright's
# executable_path (`playwright install` downloads from outside and fails here). Installed with apt when missing
# and this user is root (the CI machines); elsewhere install chromium yourself, or the page tests skip and say why.
# Prints the browser's path, or nothing.
set -uo pipefail
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then command -v "$b"; exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests (apt-get, once)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }
  command -v chromium && exit 0
fi
echo "no chromium: install it (apt-get install chromium) to run the page's browser tests" >&2
exit 0
