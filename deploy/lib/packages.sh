# shellcheck shell=bash
# Debian packages the project builds, tests and runs with, and the one way to
# install the missing ones. Sourced by tests/run and deploy/local/up.
#
#   . deploy/lib/packages.sh
#   cms_packages_ensure            # installs whatever of CMS_PACKAGES is missing
#
# Nothing is touched when everything is installed. Otherwise, as root:
# `apt-get update` once, then a non-interactive install of just the missing
# packages; as another user the same through sudo, or a failure that lists
# what to install.

CMS_PACKAGES=(
    build-essential cmake pkg-config
    libuv1-dev libpq-dev libnats-dev libjansson-dev libprotobuf-c-dev protobuf-c-compiler
    libsodium-dev libhttp-parser-dev libcriterion-dev uthash-dev
    nats-server postgresql-15 postgresql-client-15
)
# What tests/run needs beyond that: the formatter the layout check is pinned
# to, clang with libFuzzer for the fuzz targets, and what the chaos and
# cluster scripts read the servers' monitoring with.
CMS_TEST_PACKAGES=(clang-format-14 clang libclang-rt-14-dev curl jq)

# Prints, one per line, the packages among "$@" that are not installed.
cms_packages_missing()
{
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$st" = installed ] || echo "$p"
    done
}

# Installs the missing packages among "$@" (default: CMS_PACKAGES).
# Returns non-zero, with the reason on stderr, when they cannot be installed.
cms_packages_ensure()
{
    local want=("$@") missing=() sudo=()
    [ ${#want[@]} -gt 0 ] || want=("${CMS_PACKAGES[@]}")
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "packages: dpkg-query not found: this needs Debian 12 (bookworm) or a derivative;" \
            "install by hand: ${want[*]}" >&2
        return 1
    fi
    mapfile -t missing < <(cms_packages_missing "${want[@]}")
    if [ ${#missing[@]} -eq 0 ]; then
        echo "packages: all ${#want[@]} present"
        return 0
    fi
    echo "packages: missing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        # sudo -n: no password prompt when nothing can answer it (CI, no terminal)
        if command -v sudo >/dev/null 2>&1 && { [ -t 0 ] || sudo -n true 2>/dev/null; }; then
            sudo=(sudo)
        else
            echo "packages: not root and no usable sudo; as root run:" >&2
            echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
            return 1
        fi
    fi
    # The package lists of a fresh machine are empty or stale: refresh them once.
    "${sudo[@]}" apt-get update || {
        echo "packages: apt-get update failed" >&2
        return 1
    }
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" || {
        echo "packages: apt-get install failed for: ${missing[*]}" >&2
        return 1
    }
    mapfile -t missing < <(cms_packages_missing "${want[@]}")
    if [ ${#missing[@]} -gt 0 ]; then
        echo "packages: still missing after install: ${missing[*]}" >&2
        return 1
    fi
    echo "packages: installed"
}
