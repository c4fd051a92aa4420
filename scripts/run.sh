#!/usr/bin/env bash
# The main job on the embedded default config: install what is missing, build, ingest the demo
# gallery (examples/gallery), recognise the demo queries comparing with their known answers, then
# serve the HTTP API on that gallery until Ctrl-C (SIGHTLINE_SERVE=0 skips serving).
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests off only when configuring a fresh build directory: an existing one (scripts/test.sh's, say)
# keeps its options, so switching between the two scripts never rebuilds from scratch.
if [ -f "${BUILD_DIR:-build}/CMakeCache.txt" ]; then
  scripts/setup.sh
else
  scripts/setup.sh -DSIGHTLINE_BUILD_TESTS=OFF
fi
bin=${BUILD_DIR:-build}/bin/sightline
export SIGHTLINE_DATA=${SIGHTLINE_DATA:-data/demo}

echo "==> sightline ingest examples/gallery/images   (gallery under $SIGHTLINE_DATA)"
"$bin" ingest examples/gallery/images
echo "==> sightline query examples/gallery/queries/*.jpg"
"$bin" --log-level warn query examples/gallery/queries/*.jpg | tee "${BUILD_DIR:-build}/demo-results.jsonl" |
  cut -c1-200
echo "==> compared with examples/gallery/queries/truth.tsv"
correct=0; total=0
while IFS=$'\t' read -r file truth; do
  [ -z "$file" ] && continue
  total=$((total + 1))
  line=$(grep -F "\"image\":\"examples/gallery/queries/$file\"" "${BUILD_DIR:-build}/demo-results.jsonl" || true)
  answer=$(printf '%s' "$line" | sed -n 's/.*"matches":\[{"id":"\([^"]*\)".*/\1/p')
  [ -z "$answer" ] && answer="-"
  mark="wrong"; [ "$answer" = "$truth" ] && { mark="ok"; correct=$((correct + 1)); }
  printf '  %-16s truth %-12s answer %-12s %s\n' "$file" "$truth" "$answer" "$mark"
done < examples/gallery/queries/truth.tsv
echo "$correct of $total demo queries answered correctly"

[ "${SIGHTLINE_SERVE:-1}" = "0" ] && exit 0
listen=${SIGHTLINE_LISTEN:-127.0.0.1:8080}
first=$(head -1 examples/gallery/queries/truth.tsv | cut -f1)
echo "==> sightline serve on http://$listen (Ctrl-C stops it). Try, from another terminal:"
echo "    curl -F image=@examples/gallery/queries/$first http://$listen/v1/recognize"
echo "    curl http://$listen/v1/gallery?limit=5    curl http://$listen/metrics    (API: docs/api.md)"
exec "$bin" serve --set "transports=[{type: http, listen: \"$listen\"}]"
