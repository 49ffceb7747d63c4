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

mkdir -p "$out_dir"
changes=$(rsync -rc --delete --itemize-changes "$work/wheels/" "$out_dir/")
[[ -z $changes ]] || { echo changed; echo "$changes" >&2; }
