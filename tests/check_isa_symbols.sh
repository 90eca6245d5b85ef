#!/bin/sh
# ODR-trap check (STYLE.md): no two per-ISA kernel objects may define the same weak symbol.
# If isa_avx512.o and isa_avx2.o both emitted a weak copy of some inline function, the linker
# would keep one of them -- possibly the AVX-512 one -- and the AVX2 path would die with SIGILL
# on a CPU without AVX-512.
#
# Usage: check_isa_symbols.sh NM OBJECT...   (the objects of the tessera_kernels_isa library;
# an argument may also be a ;-separated list, as CMake's add_test passes $<TARGET_OBJECTS:...>)
# Exit status: 0 when no weak symbol is shared, 1 when one is (they are listed), 2 on misuse.
set -eu

if [ "$#" -lt 2 ]; then
  echo "usage: $0 NM OBJECT..." >&2
  exit 2
fi
nm_tool=$1
shift

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Split ;-separated lists into one path per line (paths with newlines are not supported).
for arg in "$@"; do printf '%s\n' "$arg" | tr ';' '\n'; done | grep -v '^$' >"$tmp/objects"

found=0
while IFS= read -r obj; do
  case "$(basename "$obj")" in
    isa_avx512.* | isa_avx2.* | isa_generic.*) ;;
    *) continue ;;
  esac
  found=$((found + 1))
  # Weak definitions: W (weak function), V (weak object), u (GNU unique). The personality
  # routine's DW.ref is a data pointer emitted identically by every C++ object: harmless.
  if ! "$nm_tool" --defined-only "$obj" >"$tmp/nm.out"; then
    echo "error: $nm_tool failed on $obj" >&2
    exit 2
  fi
  awk '$2 == "W" || $2 == "V" || $2 == "u" { print $3 }' "$tmp/nm.out" |
    { grep -v '^DW\.ref\.__gxx_personality_v0$' || true; } |
    sort -u >"$tmp/$found.syms"
  echo "$obj: $(wc -l <"$tmp/$found.syms") weak symbol(s)"
done <"$tmp/objects"

if [ "$found" -ne 3 ]; then
  echo "error: expected the 3 objects isa_avx512, isa_avx2, isa_generic; got $found" >&2
  exit 2
fi

cat "$tmp"/*.syms | sort | uniq -d >"$tmp/shared"
if [ -s "$tmp/shared" ]; then
  echo "FAIL: weak symbols defined by more than one ISA object (ODR trap):"
  if command -v c++filt >/dev/null 2>&1; then c++filt <"$tmp/shared"; else cat "$tmp/shared"; fi
  exit 1
fi
echo "OK: no weak symbol is shared between ISA objects"
