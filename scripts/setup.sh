#!/usr/bin/env bash
# Installs what the tests and the main job need beyond a Rust toolchain, from Debian's
# packages, only where it is missing:
#   dataset-fashion-mnist  Fashion-MNIST under /usr/share/datasets/fashion-mnist/ (the main
#                          job's data set; the tests train and resume on it)
#   mesa-vulkan-drivers    Mesa's Vulkan drivers, lavapipe (software Vulkan) among them: the
#                          adapter the GPU kernel's tests (the `wgpu` feature) run on where the
#                          machine has no GPU
# Needs root (or sudo) to install; with everything present it does nothing.
set -euo pipefail

need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
dpkg-query -W -f='${Status}' mesa-vulkan-drivers 2> /dev/null | grep -q 'install ok installed' ||
    need+=(mesa-vulkan-drivers)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null; then
        as_root=(sudo)
    else
        echo "scripts/setup.sh: ${need[*]} missing, and installing needs root: run it as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "scripts/setup.sh: installing ${need[*]}" >&2
if ! "${as_root[@]}" apt-get install -y -q "${need[@]}" > /dev/null; then
    "${as_root[@]}" apt-get update -q > /dev/null
    "${as_root[@]}" apt-get install -y -q "${need[@]}" > /dev/null
fi
