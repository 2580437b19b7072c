# shellcheck shell=bash
# Sourced by scripts/build-image.sh, install-deps.sh and test.sh.
#
# find_cargo: the Rust toolchain, rustup's cargo, wherever this runs (sudo resets PATH
# and drops ~/.cargo/bin; a Debian `cargo` in /usr/bin is often too old for this
# workspace). Sets cargo_bin (and RUSTUP_HOME for a sudo caller's rustup); fails when
# none is found. Order: $CARGO, $CARGO_HOME/bin, the sudo caller's ~/.cargo/bin,
# $HOME/.cargo/bin, then the caller's PATH.
find_cargo() {
  local home
  cargo_bin=""
  if [ -n "${CARGO:-}" ]; then
    [ -x "$CARGO" ] && cargo_bin=$CARGO
  elif [ -n "${CARGO_HOME:-}" ] && [ -x "$CARGO_HOME/bin/cargo" ]; then
    cargo_bin=$CARGO_HOME/bin/cargo
  elif [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] \
      && home=$(getent passwd "$SUDO_USER" | cut -d: -f6) && [ -x "$home/.cargo/bin/cargo" ]; then
    cargo_bin=$home/.cargo/bin/cargo
    [ -n "${RUSTUP_HOME:-}" ] || export RUSTUP_HOME="$home/.rustup"
  elif [ -x "$HOME/.cargo/bin/cargo" ]; then
    cargo_bin=$HOME/.cargo/bin/cargo
  else
    cargo_bin=$(command -v cargo 2>/dev/null) || cargo_bin=""
  fi
  [ -n "$cargo_bin" ]
}
