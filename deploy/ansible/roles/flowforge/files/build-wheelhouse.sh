#!/usr/bin/env bash
# Runs on the Ansible controller: build FlowForge's wheel and download wheels of all its
# dependencies for the target host's platform, so the host installs with no index at all.
#   build-wheelhouse.sh PYTHON SOURCE_DIR OUT_DIR PY_VERSION ARCH GLIBC_MINOR
# OUT_DIR is only touched where a file's content changed (wheels here build reproducibly),
# and the script prints "changed" then: Ansible reports a change only for a new build.
set -euo pipefail
python=$1 source_dir=$2 out_dir=$3 py_version=$4 arch=$5 glibc_minor=$6
abi=cp${py_version/./}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip --version >/dev/null 2>&1 || {
	echo "build-wheelhouse: $python has no pip; set flowforge_controller_python to a Python" \
		"with pip (e.g. the repository's .venv/bin/python)" >&2
	exit 1
}

"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/build" "$source_dir"
# pip does not widen --platform manylinux_2_N to older tags itself: list them all.
platforms=(--platform "manylinux2014_$arch")
for minor in $(seq "$glibc_minor" -1 17); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
"$python" -m pip download --quiet --only-binary=:all: "${platforms[@]}" \
	--python-version "$py_version" --implementation cp --abi "$abi" --abi abi3 --abi none \
	--dest "$work/wheels" "$work"/build/*.whl 2>&1 | grep -v 'is ignored' >&2 || true
ls "$work"/wheels/flowforge-*.whl >/dev/null # the download step above must have succeeded

# Mirror the new wheels into OUT_DIR by content (the controller needs no rsync: only the
# Python it already has): copy what is new or different, remove what is gone.
changes=$("$python" - "$work/wheels" "$out_dir" <<'PY'
import filecmp, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
new = set(os.listdir(src))
for name in sorted(new):
    target = os.path.join(dst, name)
    if not os.path.isfile(target) or not filecmp.cmp(os.path.join(src, name), target, shallow=False):
        shutil.copyfile(os.path.join(src, name), target + ".part")
        os.replace(target + ".part", target)
        print("copied", name)
for name in sorted(set(os.listdir(dst)) - new):
    path = os.path.join(dst, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    print("deleted", name)
PY
)
[[ -z $changes ]] || { echo changed; echo "$changes" >&2; }
