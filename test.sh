#!/usr/bin/env bash
# The README's test command: makes the tests' system prerequisites present
# (installing the missing ones with apt-get when it can), then runs every test
# with `cargo test --workspace`, passing its arguments through:
#   ./test.sh                    every test
#   ./test.sh --test demos       one test file
#   ./test.sh socket_demo        the tests whose name contains this
#   ./test.sh -- --nocapture     with the tests' output
# When something is missing and cannot be installed here (not root, no
# passwordless sudo, or no apt-get), it says what to install and runs nothing.
set -euo pipefail
cd "$(dirname "$0")"

packages=() checks=() reasons=()
# One line per prerequisite: the Debian packages, a command that succeeds once
# they are present, and why the tests need them.
need() { packages+=("$1") checks+=("$2") reasons+=("$3"); }
need "nodejs npm" "command -v node && command -v npm" "the official Node clients drive the servers under test"
need "redis-server" "command -v redis-server" "the Redis-mode tests start their own"
need "curl" "command -v curl" "a test follows an event stream with curl -N, as a user would"
need "chromium" "command -v chromium" "the browser tests drive the web page in headless Chromium"

say() { echo "test.sh: $*" >&2; }

# Runs a command quietly; on failure shows what it printed and stops.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    say "failed: $*"
    exit 1
  fi
}

# Rust is not an apt package here: Debian's rustc is older than the 1.95 the
# workspace needs, so it only gets a hint.
if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install a Rust toolchain (1.95 or later) with rustup, https://rustup.rs"
  exit 1
fi

missing=()
for i in "${!packages[@]}"; do
  if ! (eval "${checks[$i]}") >/dev/null 2>&1; then
    missing+=("$i")
  fi
done

if ((${#missing[@]} > 0)); then
  # Who may install: root itself, or sudo that asks no password (a prompt
  # would hang an unattended run).
  sudo=()
  can_install=false
  if command -v apt-get >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]]; then
      can_install=true
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
      sudo=(sudo)
      can_install=true
    fi
  fi
  if ! $can_install; then
    for i in "${missing[@]}"; do
      say "missing: ${packages[$i]} (${reasons[$i]}); install it: apt-get install ${packages[$i]}"
    done
    say "cannot install here (needs apt-get, and root or passwordless sudo): install what is missing, then run ./test.sh again"
    exit 1
  fi
  # The package lists of a fresh machine are empty: update once, before the
  # first install.
  quiet "${sudo[@]}" apt-get update -qq
  for i in "${missing[@]}"; do
    say "installing ${packages[$i]} (${reasons[$i]})"
    # shellcheck disable=SC2086 # the package list is split on purpose
    quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${packages[$i]}
    if ! (eval "${checks[$i]}") >/dev/null 2>&1; then
      say "installed ${packages[$i]}, but \`${checks[$i]}\` still fails"
      exit 1
    fi
  done
fi

exec cargo test --workspace "$@"
