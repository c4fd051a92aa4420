#!/usr/bin/env bash
# Rebuilds examples/gallery/images/ (the demo gallery) from Debian's
# endless-sky-data package, and optionally examples/gallery/queries/ (synthetic
# phone-photo queries) with the sightline-synth tool.
#
#   scripts/make-demo-gallery.sh                       # gallery only
#   scripts/make-demo-gallery.sh --synth build/bin/sightline-synth   # + queries
#
# Deterministic: the selection is the fixed list below (chosen by hand: public
# domain only, textured, distinct, not too dark, no plain skies); files are
# copied byte for byte (the originals are 720x360 JPEGs, so no re-encoding),
# and the queries use a fixed seed. See examples/gallery/README.md.
#
# Needs root (or sudo) only if endless-sky-data is not installed yet.
set -euo pipefail

PKG=endless-sky-data
PKG_VERSION_EXPECTED=0.9.8-1.2
LAND=/usr/share/games/endless-sky/images/land
QUERY_SEED=20240611
QUERY_COUNT=6
NEGATIVES=(mountain6 city10)   # PD images of the same package NOT in the gallery

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_images=$repo_root/examples/gallery/images
out_queries=$repo_root/examples/gallery/queries
synth=""

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --synth) [[ $# -ge 2 ]] || { echo "error: --synth needs a path" >&2; exit 2; }; synth=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ -n $synth && ! -x $synth ]]; then
  echo "error: --synth: not an executable: $synth" >&2; exit 2
fi

# --- make sure the package is there --------------------------------------
if ! dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'install ok installed'; then
  echo "installing $PKG ..."
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$PKG"
fi
pkg_version=$(dpkg-query -W -f='${Version}' "$PKG")
if [[ $pkg_version != "$PKG_VERSION_EXPECTED" ]]; then
  echo "warning: $PKG is $pkg_version, the gallery was made from $PKG_VERSION_EXPECTED;" \
       "check /usr/share/doc/$PKG/copyright again" >&2
fi

# --- the selection ---------------------------------------------------------
# id (= original file stem) | group (licence stanza in the package's
# debian/copyright) | title (describes the picture)
SELECTION='
badlands0|unsplash|Badlands and sand dunes under a blue sky
badlands7|unsplash|Red eroded badlands at sunset
badlands8|unsplash|Striped eroded hills under cloud
beach0|unsplash|Ruined pier on a golden beach with birds
beach2|unsplash|Sea stacks in the surf
beach3|unsplash|Cliff-lined beach on an overcast day
beach4|unsplash|Waves breaking on rocks at sunset
canyon7|unsplash|Rugged mountain ridge above a plain
city4|unsplash|City skyline and river at dusk
city8|unsplash|City skyline under dark clouds
city9|unsplash|Tall tower above a waterfront at dusk
city11|unsplash|Dense skyline of skyscrapers
fields1|unsplash|Valley with lakes below a cliff
fields5|unsplash|Cypress trees along a farm track
fields6|unsplash|Green hills and cliffs at sunrise
fields7|unsplash|Dry rolling hills with morning mist
forest1|unsplash|Forested mountain slopes
forest2|unsplash|Wooded hills under a grey sky
forest3|unsplash|Steep green valley between peaks
hills2|unsplash|Snow-streaked coloured hills
lava1|unsplash|Lava flowing into the sea
lava2|unsplash|Volcanic crater in a misty landscape
lava6|unsplash|Volcanic crater with cinder cones
mountain1|unsplash|Mountain range reflected in a lake
mountain3|unsplash|Rocky peak above a sea of clouds
mountain5|unsplash|Glacial valley between snowy mountains
mountain8|unsplash|Snowy jagged mountain ridge
sea3|unsplash|Rocky coast with water pouring into a hole
sea8|unsplash|Headland cliffs over the sea
sky8|unsplash|Pyramidal snowy peak at sunset
snow1|unsplash|Snowy mountains and valley under a blue sky
snow4|unsplash|Snowy mountain flank above a forest
snow6|unsplash|Snow-covered peak with birds
snow10|unsplash|Glacier between snowy slopes
water0|unsplash|Lake between hills at sunset
water8|unsplash|River winding through a mountain valley
desert0|nasa|Rocky reddish desert plain
nasa1|nasa|Launch towers silhouetted at sunset
nasa3|nasa|Rocket on a coastal launch pad
nasa6|nasa|Rocket on a launch pad under a blue sky
nasa8|nasa|Swirling cloud bands of a gas giant
nasa9|nasa|Blue swirling cloud patterns of a gas giant
space0|nasa|Spacecraft module in an assembly hall
space1|nasa|Inside a space-station module
space4|nasa|View through a hatch inside a spacecraft
space5|nasa|Spacecraft in a processing facility
space7|nasa|Test chamber with white wall panels
station1|nasa|Rocket stages in a factory hall
station3|nasa|Hatch inside a space station
station4|nasa|Rocket engines in an assembly hall
lava0|usgs|Volcanic crater with steam vents
'

json_escape() { local s=$1; s=${s//\\/\\\\}; s=${s//\"/\\\"}; printf '%s' "$s"; }

mkdir -p "$out_images"
# Remove only what this script makes, so that a shrunken list leaves no strays.
find "$out_images" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.json' \) -delete

count=0
while IFS='|' read -r id group title; do
  [[ -n $id ]] || continue
  [[ $id =~ ^[a-z0-9-]+$ ]] || { echo "error: bad id '$id'" >&2; exit 1; }
  src=$LAND/$id.jpg
  [[ -r $src ]] || { echo "error: missing $src (package layout changed?)" >&2; exit 1; }
  case $group in
    unsplash)
      licence=public-domain
      author="Unknown photographer (unsplash.com)"
      note="Taken from unsplash.com, a collection of photographs that have been donated and placed in the public domain." ;;
    nasa)
      licence=public-domain
      author=NASA
      note="From NASA, and therefore in the public domain because they were created by government employees while doing work for the government." ;;
    usgs)
      licence=public-domain
      author=USGS
      note="From the USGS, and therefore in the public domain because they were created by government employees while doing work for the government." ;;
    *) echo "error: unknown group '$group'" >&2; exit 1 ;;
  esac
  cp "$src" "$out_images/$id.jpg"
  chmod 0644 "$out_images/$id.jpg"
  sha=$(sha256sum "$src" | cut -d' ' -f1)
  dims=$(file -b "$src" | grep -o ', [0-9]*x[0-9]*,' | tr -d ', ')
  {
    printf '{\n'
    printf '  "id": "%s",\n' "$id"
    printf '  "title": "%s",\n' "$(json_escape "$title")"
    printf '  "source_package": "%s",\n' "$PKG"
    printf '  "source_version": "%s",\n' "$PKG_VERSION_EXPECTED"
    printf '  "source_path": "%s",\n' "$src"
    printf '  "licence": "%s",\n' "$licence"
    printf '  "author": "%s",\n' "$(json_escape "$author")"
    printf '  "licence_note": "%s",\n' "$(json_escape "$note (/usr/share/doc/$PKG/copyright)")"
    printf '  "width": %s,\n' "${dims%x*}"
    printf '  "height": %s,\n' "${dims#*x}"
    printf '  "sha256": "%s"\n' "$sha"
    printf '}\n'
  } > "$out_images/$id.json"
  count=$((count + 1))
done <<< "$SELECTION"

bytes=$(du -cb "$out_images"/* | tail -1 | cut -f1)
echo "gallery: $count images, $bytes bytes in $out_images"
if (( bytes > 5 * 1024 * 1024 )); then
  echo "error: gallery is over 5 MB" >&2; exit 1
fi

# --- synthetic queries -------------------------------------------------------
if [[ -n $synth ]]; then
  negdir=$(mktemp -d)
  trap 'rm -rf "$negdir"' EXIT
  for n in "${NEGATIVES[@]}"; do
    if [[ -e $out_images/$n.jpg ]]; then
      echo "error: negative $n is in the gallery" >&2; exit 1
    fi
    cp "$LAND/$n.jpg" "$negdir/"
  done
  mkdir -p "$out_queries"
  find "$out_queries" -maxdepth 1 -type f \( -name '*.jpg' -o -name 'truth.tsv' -o -name '*.corners.txt' \) -delete
  "$synth" --gallery "$out_images" --negatives "$negdir" --out "$out_queries" \
           --count "$QUERY_COUNT" --seed "$QUERY_SEED" --size 1024x768
  qbytes=$(du -cb "$out_queries"/* | tail -1 | cut -f1)
  echo "queries: $qbytes bytes in $out_queries"
fi
