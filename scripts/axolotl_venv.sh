#!/usr/bin/env bash
# Build (once) and reuse a Python 3.12 virtual environment with axolotl==0.21.0, cached under the user's
# cache folder (never inside the repository), and optionally install a dpo_plugin checkout into it
# WITHOUT overriding Axolotl's pins.
#
#   scripts/axolotl_venv.sh                 # build or reuse the venv; prints "axolotl venv: <path>"
#   scripts/axolotl_venv.sh <checkout>      # ... then `pip install --no-deps -e <checkout>` and install
#                                           # only those of dpo_plugin's requirements that are missing;
#                                           # requirements the venv's pins do not satisfy are reported
#
# Environment:
#   DPO_AXOLOTL_VENV     venv folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/dpo_plugin/axolotl-venv-0.21.0-py3.12)
#   DPO_PYTHON312        a Python 3.12 interpreter to use instead of the search below
#   DPO_PLUGIN_EXTRAS    extras of dpo_plugin whose requirements are also installed if missing (default: test)
#
# Exit status: 0 ready; 2 no Python 3.12 found; 3 a requirement of dpo_plugin conflicts with the venv's pins
# (the venv and the editable install are still usable; the conflicts are listed on stderr); other: a failed step.
# Idempotent: a finished venv carries a marker file written last; a folder without it (an interrupted build)
# is removed and rebuilt. Concurrent runs wait on a lock.
set -euo pipefail

AXOLOTL_VERSION=0.21.0
PY_MINOR=3.12
VENV=${DPO_AXOLOTL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dpo_plugin/axolotl-venv-${AXOLOTL_VERSION}-py${PY_MINOR}}
MARKER="$VENV/.dpo_plugin-axolotl-ready"
CHECKOUT=${1:-}
EXTRAS=${DPO_PLUGIN_EXTRAS-test}

say() { echo "axolotl_venv: $*" >&2; }

is_py312() {  # $1: an interpreter; true when it runs and is 3.12 with the venv module
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1
}

find_python312() {
    local cand root
    if [ -n "${DPO_PYTHON312:-}" ]; then
        is_py312 "$DPO_PYTHON312" && { echo "$DPO_PYTHON312"; return 0; }
        say "DPO_PYTHON312=$DPO_PYTHON312 is not a working Python 3.12"; return 1
    fi
    if command -v python3.12 >/dev/null 2>&1 && is_py312 python3.12; then  # a pyenv shim may exist and fail
        command -v python3.12; return 0
    fi
    if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root 2>/dev/null || true); fi
    root=${root:-${PYENV_ROOT:-$HOME/.pyenv}}
    # newest 3.12.x first
    for cand in $(ls -d "$root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V -r); do
        is_py312 "$cand" && { echo "$cand"; return 0; }
    done
    return 1
}

build_venv() {
    local py
    if ! py=$(find_python312); then
        say "no Python 3.12 found (tried \$DPO_PYTHON312, 'python3.12' on PATH, and" \
            "\$(pyenv root)/versions/3.12.*/bin/python3.12); axolotl==$AXOLOTL_VERSION needs Python >= 3.12." \
            "Install one (e.g. 'pyenv install 3.12') or set DPO_PYTHON312."
        exit 2
    fi
    if [ -d "$VENV" ]; then
        say "removing the unfinished venv at $VENV (no marker: an earlier build was interrupted)"
        rm -rf -- "$VENV"
    fi
    say "building $VENV with $py ($("$py" -c 'import platform; print(platform.python_version())'));" \
        "axolotl==$AXOLOTL_VERSION takes a few minutes and ~8 GB"
    mkdir -p "$(dirname "$VENV")"
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "axolotl==$AXOLOTL_VERSION"
    "$VENV/bin/python" -c 'import axolotl, trl, torch, sys; print(axolotl.__version__, trl.__version__, torch.__version__)' >/dev/null
    "$VENV/bin/python" -m pip freeze --exclude-editable >"$VENV/axolotl-freeze.txt"
    echo "axolotl==$AXOLOTL_VERSION python=$("$VENV/bin/python" -c 'import platform; print(platform.python_version())')" >"$MARKER"
}

install_checkout() {  # $1: a dpo_plugin checkout (folder with pyproject.toml)
    local checkout status=0
    checkout=$(cd "$1" && pwd)
    [ -f "$checkout/pyproject.toml" ] || { say "$checkout has no pyproject.toml"; exit 1; }
    "$VENV/bin/python" -m pip install -q --no-deps -e "$checkout"
    # Which of dpo-plugin's requirements (base + $EXTRAS) are missing, and which the installed versions break.
    # Missing ones are installed with everything already in the venv pinned (a constraints file from pip freeze),
    # so pip cannot upgrade or downgrade anything Axolotl put there; a conflict is reported, never "fixed".
    local plan missing
    plan=$("$VENV/bin/python" - "$EXTRAS" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from packaging.requirements import Requirement

extras = [e for e in sys.argv[1].replace(",", " ").split() if e]
for line in distribution("dpo-plugin").requires or []:
    req = Requirement(line)
    env_ok = any(req.marker.evaluate({"extra": e}) for e in extras) if req.marker and "extra" in str(req.marker) \
        else (req.marker is None or req.marker.evaluate())
    if not env_ok:
        continue
    try:
        have = version(req.name)
    except PackageNotFoundError:
        print(f"MISSING {req.name}{req.specifier}")
        continue
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        print(f"CONFLICT {req.name}{req.specifier} installed={have}")
    else:
        print(f"OK {req.name}{req.specifier} installed={have}")
EOF
)
    missing=$(awk '$1 == "MISSING" {print $2}' <<<"$plan")
    if [ -n "$missing" ]; then
        say "installing dpo_plugin requirements missing from the venv: $(echo $missing)"
        local cons
        cons=$(mktemp)
        "$VENV/bin/python" -m pip freeze --exclude-editable >"$cons"
        # shellcheck disable=SC2086
        PIP_CONSTRAINT="$cons" "$VENV/bin/python" -m pip install -q $missing || status=$?
        rm -f "$cons"
        [ "$status" -eq 0 ] || { say "installing the missing requirements failed (pip status $status)"; exit "$status"; }
    fi
    if grep -q '^CONFLICT' <<<"$plan"; then
        say "dpo_plugin requirements NOT satisfied by Axolotl's pins (left as Axolotl has them):"
        grep '^CONFLICT' <<<"$plan" | sed 's/^/  /' >&2
        CONFLICTS=1
    fi
}

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ -f "$MARKER" ] && [ -x "$VENV/bin/python" ]; then
    :  # reuse
else
    build_venv
fi
CONFLICTS=0
if [ -n "$CHECKOUT" ]; then
    install_checkout "$CHECKOUT"
fi
echo "axolotl venv: $VENV"
[ "$CONFLICTS" -eq 0 ] || exit 3
