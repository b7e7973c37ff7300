#!/usr/bin/env bash
# The project's test command (README, CI): formatting, lints (host and nvptx), all tests.
#
#   scripts/test.sh            # everything, tests in release (numerical tests on full frames)
#   DESI_TEST_PROFILE=dev scripts/test.sh   # tests in the dev profile instead
#
# Runs scripts/setup.sh first, so it works on a fresh machine. `ptxas` is taken from $DESI_PTXAS, else PATH, else the
# pip location of setup.sh; tests/ptx.rs fails without it when CI=true. DESI_EXTRACT_PTX (the
# prebuilt-PTX escape hatch of build.rs) is unset: the tests always check freshly built kernels.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# Install whatever is missing (idempotent, about a second when everything is there).
bash "$repo/scripts/setup.sh" >/dev/null
unset DESI_EXTRACT_PTX
py_tools=${DESI_PY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/desi-extract/py}
if [[ -z ${DESI_PTXAS:-} ]]; then
    DESI_PTXAS=$(command -v ptxas || compgen -G "$py_tools/nvidia/cu*/bin/ptxas" | sort | tail -n 1 || true)
fi
export DESI_PTXAS
export PYTHONPATH=$py_tools${PYTHONPATH:+:$PYTHONPATH}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
profile=${DESI_TEST_PROFILE:-release}

step() {
    local start=$SECONDS
    printf '\n==> %s\n' "$*" >&2
    "$@"
    printf '<== %ss: %s\n' "$((SECONDS - start))" "$*" >&2
}

# A user's clone has nothing beside it: no tracked file may read or cite the development
# checkout's sibling folder `shared` (its first drafts and data). Test data live in tests/data,
# docs in docs/. (The pattern is written so that this file does not match it.)
no_shared_refs() {
    local pattern='\.\.[/]shared' hits
    if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
        hits=$(git -C "$repo" grep -n -I -e "$pattern" -- . || true)
    else
        hits=$(grep -rnI --exclude-dir={.git,target} -e "$pattern" "$repo" || true)
    fi
    if [[ -n $hits ]]; then
        printf 'these tracked files refer to the sibling folder shared, which a clone does not have:\n%s\n' "$hits" >&2
        return 1
    fi
}
step no_shared_refs
step cargo fmt --all -- --check
step cargo clippy --workspace --all-targets -- -D warnings
# The kernel shims are nvptx-only (#[cfg(target_arch = "nvptx64")]): lint the device crate for
# that target too, in its own target dir. `unused_features`: lib.rs enables the nvptx features
# that kernels will need before every one of them is used.
step env RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Ctarget-cpu=sm_80" \
    cargo clippy -p desi-extract-device --lib --target nvptx64-nvidia-cuda -Zbuild-std=core \
    --target-dir "$target_dir/ptx/clippy" -- -D warnings -A unused_features
# The device crate's access model (feature access-trace: device/src/trace.rs and
# device/tests/access_model.rs, which the workspace runs above leave out).
step cargo clippy -p desi-extract-device --all-targets --features access-trace -- -D warnings
# Library, binary, integration and doc tests of both packages (benches are only linted above).
step cargo test --workspace --no-fail-fast --profile "$profile"
step cargo test -p desi-extract-device --profile "$profile" --features access-trace --test access_model
# The Python package (pyproject.toml, python/): pip builds it with maturin in release (in
# target/, sharing the dependencies built above) into target/python; tests/python compares it,
# and desispec 0.70.0's own extraction script running on it, with the CLI built above.
[[ $profile == dev ]] && bin_dir=$target_dir/debug || bin_dir=$target_dir/$profile
step env PATH="$py_tools/bin:$PATH" python3 -m pip install --quiet --no-build-isolation --no-deps \
    --upgrade --disable-pip-version-check --root-user-action=ignore --target "$target_dir/python" "$repo"
step env PYTHONPATH="$target_dir/python:$PYTHONPATH" DESI_EXTRACT_BIN="$bin_dir/desi-extract" \
    python3 -m unittest discover -s "$repo/tests/python" -v
