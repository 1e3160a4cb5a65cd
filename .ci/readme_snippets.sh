#!/usr/bin/env bash
# A new user's install, checked: a fresh clone of HEAD (tracked files only) installed with plain pip (not the
# Makefile) into a new virtual environment, then `glip --version`, `glip models`, `glip demo` and the README's
# Python snippets (tests/test_readme.py, run from outside the clone so the *installed* package is imported).
#
#   .ci/readme_snippets.sh                       # pip install '.[tiny,nlp,eval]' + pytest from the package index
#   GLIP_DEPS_FROM=/path/to/site-packages .ci/readme_snippets.sh
#        # offline: the dependencies are taken from an existing environment's site-packages and glip itself is
#        # installed with `pip install --no-deps` (checks the clone's packaging, not dependency resolution)
#
# Not part of `make test` (it downloads PyTorch without GLIP_DEPS_FROM). Exit code 0 when everything ran.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d -t glip-readme-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
git clone --quiet "$REPO" "$WORK/glip"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
if [ -n "${GLIP_DEPS_FROM:-}" ]; then
  "$VPY" -m pip uninstall -q -y setuptools 2>/dev/null || true  # the environment's own (pyproject needs >= 77)
  "$VPY" -c "import site, sys; open(site.getsitepackages()[0] + '/deps.pth', 'w').write(sys.argv[1] + '\n')" "$GLIP_DEPS_FROM"
  (cd "$WORK/glip" && "$VPY" -m pip install -q --no-deps --no-build-isolation .)
else
  (cd "$WORK/glip" && "$VPY" -m pip install -q '.[tiny,nlp,eval]' pytest)
fi
cd "$WORK"
"$VPY" -c "import glip, sys; assert glip.__file__.startswith('$WORK/venv'), glip.__file__; print('glip from', glip.__file__)"
"$WORK/venv/bin/glip" --version
"$WORK/venv/bin/glip" models
OMP_NUM_THREADS=1 "$WORK/venv/bin/glip" demo --out "$WORK/demo"
GLIP_README="$WORK/glip/README.md" OMP_NUM_THREADS=1 "$VPY" -m pytest -q -p no:cacheprovider \
  --rootdir "$WORK/glip" "$WORK/glip/tests/test_readme.py"
echo "readme_snippets: a fresh clone installed with plain pip runs the README's snippets"
