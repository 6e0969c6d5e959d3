#!/usr/bin/env bash
# Regenerates Sources/SyncWire/Generated/sync.pb.swift from protocol/sync.proto, with protoc
# (Debian: protobuf-compiler) and the protoc-gen-swift of the swift-protobuf version the package
# resolves, so generator and runtime always match.
#   protocol/generate.sh          write the generated file
#   protocol/generate.sh --check  fail if the committed file differs from what the .proto generates
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
swift build --product protoc-gen-swift >/dev/null
plugin="$(swift build --show-bin-path)/protoc-gen-swift"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
protoc --plugin=protoc-gen-swift="$plugin" --swift_opt=Visibility=Public \
  --swift_out="$out" -I protocol protocol/sync.proto
target=Sources/SyncWire/Generated/sync.pb.swift
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -u "$target" "$out/sync.pb.swift"; then
    echo "$target is stale: run protocol/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "generated code matches protocol/sync.proto"
else
  cp "$out/sync.pb.swift" "$target"
  echo "wrote $target"
fi
