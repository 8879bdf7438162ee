#!/bin/sh
# Rebuild thumbd's built-in CMYK profile (thumbd/render/profiles/FOGRA39-thumbd.icc) and the
# test patches (tests/render/data/fogra39-patches.tsv) from Fogra's FOGRA39L measurement data.
#
# Needs Debian's icc-profiles-free (FOGRA39L.ti3, Zlib licence) and argyll (colprof):
#   apt-get install icc-profiles-free argyll
# Not run in CI: the profile and the patches are committed. Run it from anywhere.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
ti3=$(dpkg -L icc-profiles-free 2>/dev/null | grep '/FOGRA39L\.ti3$' || true)
ti3=${ti3:-/usr/share/color/icc/FOGRA39L.ti3}
[ -r "$ti3" ] || { echo "FOGRA39L.ti3 not found: apt-get install icc-profiles-free" >&2; exit 1; }
command -v colprof >/dev/null || { echo "colprof not found: apt-get install argyll" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$ti3" "$work/FOGRA39L.ti3"

# -qm: a 33-node A2B grid; -qh (17x larger file) and -ql were measured too: -qh is no closer to
# the data (mean ΔE2000 0.24 against 0.26), -ql is off by half as much again (0.40).
# -bn: no B2A tables. thumbd only reads CMYK (A2B), never writes it, and B2A is what makes a
# full profile 20 times the size. -nc: leave the measurement data out of the profile.
(cd "$work" && colprof -v -qm -bn -nc -A "thumbd" -D "FOGRA39 (thumbd build)" \
  -C "Built from Fogra's FOGRA39L.ti3 characterisation data (Zlib licence)" FOGRA39L)
cp "$work/FOGRA39L.icc" "$root/thumbd/render/profiles/FOGRA39-thumbd.icc"

# Every 10th patch, for tests/render/test_cmyk.py (Lab only: the test works from Lab).
out="$root/tests/render/data/fogra39-patches.tsv"
{
  printf '# FOGRA39L characterisation data, every 10th patch (1, 11, 21, ...): 162 of 1617.\n'
  printf "# From FOGRA39L.ti3 as Debian's icc-profiles-free ships it (Zlib licence, see README).\n"
  printf '# Measured D50, 2 degree observer, 45/0 geometry (ISO 13655); Lab is absolute (paper 95, 0, -2).\n'
  printf '# id\tC%%\tM%%\tY%%\tK%%\tL\ta\tb\n'
  tr -d '\r' <"$ti3" | awk '
    /^BEGIN_DATA$/ { d = 1; next }
    /^END_DATA$/ { d = 0 }
    d && ($1 - 1) % 10 == 0 { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", $1, $2, $3, $4, $5, $9, $10, $11 }'
} >"$out"
echo "wrote thumbd/render/profiles/FOGRA39-thumbd.icc and tests/render/data/fogra39-patches.tsv"
