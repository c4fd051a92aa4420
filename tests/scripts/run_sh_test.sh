#!/usr/bin/env bash
# scripts/run.sh must not flip the options of an existing build directory (issue 22: it
# reconfigured build/ with tests off after scripts/test.sh, so the next test build redid work).
# cmake, dpkg-query and the sightline binary are stand-ins that record how they were called.
# Usage: run_sh_test.sh SOURCE_DIR
set -euo pipefail
src=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/sightline-run-sh-XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/fakebin"
cat > "$work/fakebin/cmake" <<'FAKE'
#!/usr/bin/env bash
echo "cmake $*" >> "$FAKE_LOG"
FAKE
cat > "$work/fakebin/dpkg-query" <<'FAKE'
#!/usr/bin/env bash
printf 'install ok installed'
FAKE
chmod +x "$work/fakebin/cmake" "$work/fakebin/dpkg-query"

# Returns the cmake calls run.sh made with BUILD_DIR=$1.
run_with_build_dir() {
  local build=$1
  mkdir -p "$build/bin"
  printf '#!/usr/bin/env bash\nexit 0\n' > "$build/bin/sightline"
  chmod +x "$build/bin/sightline"
  : > "$work/cmake.log"
  (cd "$src" && FAKE_LOG="$work/cmake.log" PATH="$work/fakebin:$PATH" BUILD_DIR="$build" \
     SIGHTLINE_SERVE=0 SIGHTLINE_DATA="$work/data" scripts/run.sh > "$work/run.out" 2>&1) ||
    { echo "FAIL: scripts/run.sh failed:"; cat "$work/run.out"; exit 1; }
  cat "$work/cmake.log"
}

status=0
# A build directory configured before (by scripts/test.sh): its options are left as they are.
mkdir -p "$work/configured"
printf 'SIGHTLINE_BUILD_TESTS:BOOL=ON\n' > "$work/configured/CMakeCache.txt"
calls=$(run_with_build_dir "$work/configured")
if grep -q -- "-DSIGHTLINE_BUILD_TESTS" <<< "$calls"; then
  echo "FAIL: run.sh changed SIGHTLINE_BUILD_TESTS of an existing build directory:"
  echo "$calls"
  status=1
fi
grep -q -- "--build" <<< "$calls" || { echo "FAIL: run.sh did not build:"; echo "$calls"; status=1; }

# A fresh build directory: run.sh needs no tests, so it configures without them.
calls=$(run_with_build_dir "$work/fresh")
if ! grep -q -- "-DSIGHTLINE_BUILD_TESTS=OFF" <<< "$calls"; then
  echo "FAIL: run.sh configured a fresh build directory without -DSIGHTLINE_BUILD_TESTS=OFF:"
  echo "$calls"
  status=1
fi
[ "$status" = 0 ] && echo "run.sh leaves an existing build directory's options alone"
exit "$status"
