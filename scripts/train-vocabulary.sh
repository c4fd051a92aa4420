#!/usr/bin/env bash
# Re-makes a shipped vocabulary with `sightline vocab train`, on redistributable images from Debian packages:
#   scripts/train-vocabulary.sh [orb]  config/vocabularies/orb-default.voc for config/scale-vocab.yaml's ORB
#                                      extractor (branching 16, depth 4)
#   scripts/train-vocabulary.sh surf   config/vocabularies/surf-default.voc for config/default.yaml's
#                                      SURF extractor (branching 8, depth 5, 30 crops
#                                      per image: about 700,000 descriptors, so most words get a median)
# the wallpapers of plasma-workspace-wallpapers, mate-backgrounds, gnome-backgrounds and
# ukui-wallpapers (GPL-2+, CC-BY-SA), and the sample images of opencv-doc (BSD/Apache) and
# python3-skimage (BSD/public domain/CC0). None of the images the benchmarks query (endless-sky's
# photographs) is among them. Usage: scripts/train-vocabulary.sh [orb|surf] [extra `vocab train` options]
set -euo pipefail
cd "$(dirname "$0")/.."
kind=orb
case "${1:-}" in orb | surf) kind=$1; shift ;; esac
if [ "$kind" = surf ]; then
  config=config/default.yaml out=surf-default.voc branching=8 depth=5 crops=30 samples=1000000
else
  config=config/scale-vocab.yaml out=orb-default.voc branching=16 depth=4 crops=6 samples=600000
fi
packages=(plasma-workspace-wallpapers mate-backgrounds gnome-backgrounds ukui-wallpapers opencv-doc python3-skimage)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
[ -x "${BUILD_DIR:-build}/bin/sightline" ] || scripts/setup.sh -DSIGHTLINE_BUILD_TESTS=OFF

dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
n=0
link() { n=$((n + 1)); ln -s "$1" "$dir/$(printf '%04d' $n)-$(basename "$1")"; }
# Plasma ships each wallpaper at many sizes: the largest of each.
for w in /usr/share/wallpapers/*/contents/images; do
  big=$(ls "$w" | grep -E '\.(jpg|png)$' | sort -t x -k1,1n | tail -1)
  [ -n "$big" ] && link "$w/$big"
done
for f in /usr/share/backgrounds/*.{jpg,png} /usr/share/backgrounds/mate/*/*.{jpg,png} \
         /usr/share/backgrounds/gnome/*.{jpg,webp} /usr/share/doc/opencv-doc/examples/data/*.{jpg,png} \
         /usr/lib/python3/dist-packages/skimage/data/*.{jpg,png}; do
  [ -f "$f" ] && link "$f"
done
echo "==> $n training images"
# Into the source tree (the configs read the copy the build puts in share/sightline/vocabularies).
exec "${BUILD_DIR:-build}/bin/sightline" --config "$config" --set storages.vocab.root=config/vocabularies \
  vocab train --from "$dir" \
  --out "${VOCAB_OUT:-$out}" --branching "${VOCAB_BRANCHING:-$branching}" --depth "${VOCAB_DEPTH:-$depth}" \
  --crops "${VOCAB_CROPS:-$crops}" --max-samples "${VOCAB_SAMPLES:-$samples}" "$@"
