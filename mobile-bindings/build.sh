#!/usr/bin/env bash
# Builds linli-ffi for apps and generates its Kotlin and Swift bindings in library mode.
#
#   mobile-bindings/build.sh [host|android|ios|all]...     (default: host)
#
#   host     the library for this machine, plus the Kotlin and Swift bindings (generated from it:
#            the bindings do not depend on the target) -- works anywhere, no SDKs needed
#   android  + liblinli_ffi.so per ABI for the Gradle module (needs cargo-ndk and an Android NDK)
#   ios      + LinliFFI.xcframework for the SwiftPM package (needs macOS with Xcode)
#   all      all three
#
# Everything goes to mobile-bindings/build/ (ignored by git, never committed):
#   build/bindings/kotlin/linli/ffi/linli_ffi.kt       Kotlin (package linli.ffi), for android/
#   build/bindings/swift/{Linli.swift,LinliFFI.h,LinliFFI.modulemap}
#   build/swift/Sources/Linli/Linli.swift               the Swift target of Package.swift
#   build/android/jniLibs/<abi>/liblinli_ffi.so         the .so files of android/
#   build/ios/LinliFFI.xcframework                      the binary target of Package.swift
#   build/host/liblinli_ffi.{so,a}                      the host library (what the tests load)
#
# Libraries are built with the `mobile` profile of cargo-mobile.toml (release, size-optimised,
# LTO, stripped). Environment: ANDROID_ABIS (default "arm64-v8a armeabi-v7a x86_64"),
# ANDROID_API (default 24), IOS_DEPLOYMENT_TARGET (default 15.0), CARGO (default cargo).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="$HERE/build"
CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE=(--profile mobile --config "$HERE/cargo-mobile.toml")
ANDROID_ABIS="${ANDROID_ABIS:-arm64-v8a armeabi-v7a x86_64}"
ANDROID_API="${ANDROID_API:-24}"
export IPHONEOS_DEPLOYMENT_TARGET="${IOS_DEPLOYMENT_TARGET:-15.0}"

cd "$ROOT"
say() { printf '\n== %s\n' "$*"; }
kib() { echo "$(($(wc -c <"$1") / 1024))"; }
# Prints a library's size as built and, for a shared library when a strip tool for it is at hand,
# fully stripped (what an app ships after packaging).
size() {
  local stripped="" tool="${STRIP:-strip}"
  if [[ "$1" != *.a ]] && command -v "$tool" >/dev/null 2>&1 &&
    "$tool" -o "$1.stripped" "$1" 2>/dev/null; then
    stripped=" ($(kib "$1.stripped") KiB stripped)"
    rm -f "$1.stripped"
  fi
  printf '  %-52s %8s KiB%s\n' "${1#"$ROOT"/}" "$(kib "$1")" "$stripped"
}

case "$(uname -s)" in
  Darwin) HOST_LIB=liblinli_ffi.dylib ;;
  *) HOST_LIB=liblinli_ffi.so ;;
esac

host() {
  say "host library ($(rustc -vV | sed -n 's/^host: //p'))"
  "$CARGO" build -p linli-ffi "${PROFILE[@]}"
  mkdir -p "$OUT/host"
  cp "$TARGET_DIR/mobile/$HOST_LIB" "$TARGET_DIR/mobile/liblinli_ffi.a" "$OUT/host/"
  size "$OUT/host/$HOST_LIB"
  size "$OUT/host/liblinli_ffi.a"

  say "bindings (library mode, from $HOST_LIB)"
  "$CARGO" build -q -p uniffi-bindgen
  local bindgen="$TARGET_DIR/debug/uniffi-bindgen"
  rm -rf "$OUT/bindings"
  for lang in kotlin swift; do
    "$bindgen" generate --library "$OUT/host/$HOST_LIB" --language "$lang" \
      --config "$HERE/uniffi.toml" --out-dir "$OUT/bindings/$lang" --no-format
  done
  mkdir -p "$OUT/swift/Sources/Linli"
  cp "$OUT/bindings/swift/Linli.swift" "$OUT/swift/Sources/Linli/"
  find "$OUT/bindings" -type f | sort | sed "s|^$ROOT/|  |"
}

android() {
  say "android: $ANDROID_ABIS (API $ANDROID_API)"
  if ! "$CARGO" ndk --version >/dev/null 2>&1; then
    echo "cargo-ndk is missing: cargo install cargo-ndk; set ANDROID_NDK_HOME to an NDK" >&2
    exit 1
  fi
  local args=() abi
  for abi in $ANDROID_ABIS; do args+=(-t "$abi"); done
  rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android i686-linux-android >/dev/null
  rm -rf "$OUT/android/jniLibs"
  "$CARGO" ndk "${args[@]}" --platform "$ANDROID_API" -o "$OUT/android/jniLibs" \
    build -p linli-ffi "${PROFILE[@]}"
  for abi in $ANDROID_ABIS; do size "$OUT/android/jniLibs/$abi/liblinli_ffi.so"; done
}

ios() {
  say "ios: device, simulator (arm64 + x86_64) -> LinliFFI.xcframework"
  if [ "$(uname -s)" != Darwin ] || ! command -v xcodebuild >/dev/null 2>&1; then
    echo "building for iOS needs macOS with Xcode (xcodebuild, lipo)" >&2
    exit 1
  fi
  local t
  for t in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios; do
    rustup target add "$t" >/dev/null
    "$CARGO" build -p linli-ffi "${PROFILE[@]}" --target "$t"
  done
  local ios="$OUT/ios"
  rm -rf "$ios" && mkdir -p "$ios/headers" "$ios/sim"
  cp "$OUT/bindings/swift/LinliFFI.h" "$ios/headers/"
  # Inside an XCFramework the module map must be called module.modulemap.
  cp "$OUT/bindings/swift/LinliFFI.modulemap" "$ios/headers/module.modulemap"
  lipo -create "$TARGET_DIR/aarch64-apple-ios-sim/mobile/liblinli_ffi.a" \
    "$TARGET_DIR/x86_64-apple-ios/mobile/liblinli_ffi.a" -output "$ios/sim/liblinli_ffi.a"
  xcodebuild -create-xcframework \
    -library "$TARGET_DIR/aarch64-apple-ios/mobile/liblinli_ffi.a" -headers "$ios/headers" \
    -library "$ios/sim/liblinli_ffi.a" -headers "$ios/headers" \
    -output "$ios/LinliFFI.xcframework"
  size "$TARGET_DIR/aarch64-apple-ios/mobile/liblinli_ffi.a"
  size "$ios/sim/liblinli_ffi.a"
}

[ $# -eq 0 ] && set -- host
want_android=false want_ios=false
for what in "$@"; do
  case "$what" in
    host) ;;
    android) want_android=true ;;
    ios) want_ios=true ;;
    all) want_android=true want_ios=true ;;
    *) echo "usage: $0 [host|android|ios|all]..." >&2; exit 2 ;;
  esac
done
# The bindings are generated from the host library, so it is always built first.
host
if $want_android; then android; fi
if $want_ios; then ios; fi
say "done: $OUT"
