#!/usr/bin/env bash
# Regenerate bnorm's reference-parity fixtures in one command.
#
#   tests/parity/generate.sh            # all families
#   tests/parity/generate.sh --only onnx
#   tests/parity/generate.sh --only keras_files
#
# Creates (once) a virtualenv OUTSIDE the repository, installs the pinned
# requirements from PyPI, runs generate_fixtures.py (which rewrites
# tests/parity/fixtures/ and tests/parity/onnx/), the independent numpy check
# check_fixtures.py, and generate_keras_files.py (Keras model files in
# tests/parity/fixtures/keras_files/; with --only only as
# `--only keras_files`, which runs nothing else).
# See docs/parity-fixtures.md.
#
# Environment:
#   BNORM_PARITY_VENV  virtualenv path (default: <repo>/../venv-parity)
#   PYTHON             interpreter that creates it (default: python3;
#                      the pins were verified with Python 3.11)
# On Debian 12 the only system package needed is python3-venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${BNORM_PARITY_VENV:-$(dirname "$repo")/venv-parity}"
python="${PYTHON:-python3}"

case "$(realpath -m "$venv")/" in
  "$repo"/*) echo "generate.sh: the virtualenv must live outside $repo" >&2
             exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "generate.sh: creating virtualenv $venv with $python"
  if ! "$python" -m venv "$venv"; then
    echo "generate.sh: venv creation failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi

pyver="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$pyver" != "3.11" ]; then
  echo "generate.sh: warning: virtualenv has Python $pyver; pins were verified with 3.11" >&2
fi

"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt"

export CUDA_VISIBLE_DEVICES=""
export TF_CPP_MIN_LOG_LEVEL=2
export KERAS_BACKEND=tensorflow
cd "$repo"
# Whole Keras model files (fixtures/keras_files) come from their own script:
# run after the other families, alone with `--only keras_files`, and not at
# all when --only picks other families.
if [ "$*" = "--only keras_files" ] || [ "$*" = "--only=keras_files" ]; then
  "$venv/bin/python" tests/parity/generate_keras_files.py
  exit 0
fi
"$venv/bin/python" tests/parity/generate_fixtures.py "$@"
"$venv/bin/python" tests/parity/check_fixtures.py
case " $* " in
  *" --only "* | *" --only="*) ;;
  *) "$venv/bin/python" tests/parity/generate_keras_files.py ;;
esac
