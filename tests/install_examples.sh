#!/usr/bin/env bash
# Installs a build into a fresh prefix and uses it as a user would. Usage:
#   tests/install_examples.sh BUILD_DIR        (CTest: install_examples)
#
# Checks: every file lands where README.md ("Install") says; libtessera.so has SONAME
# libtessera.so.0, exports tessera_version and nothing of the engine's internals; libtessera.a
# holds every object of the internal libraries of the build; a copy of examples/ builds with CMake
# (find_package(Tessera), against libtessera.so and libtessera.a) and with pkg-config and the
# system compilers (C and C++, and C against libtessera.a with `pkg-config --static`), and every
# program prints the project's version; the Python module, when built, imports from the install
# and finds the installed library. Temporary folders are removed on exit.
set -euo pipefail

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[ $# -eq 1 ] || fail "usage: $0 BUILD_DIR"
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
want=$(sed -n 's/^project(tessera VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ -n "$want" ] || fail "no project(tessera VERSION ...) in $src/CMakeLists.txt"
major=${want%%.*}

for tool in cmake pkg-config cc c++ nm readelf c++filt ar ldd; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (tools/setup.sh installs it)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tessera-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

# Runs a program built against the install; its one line of output must be the version.
check_prints_version() {
  local name=$1 exe=$2 out
  out=$(LD_LIBRARY_PATH="$prefix/lib" "$exe") || fail "$name exited with status $?"
  [ "$out" = "$want" ] || fail "$name printed '$out', expected '$want'"
  echo "ok: $name prints $out"
}

# Checks that a program linked against libtessera.so finds the installed one.
check_uses_installed_so() {
  local name=$1 exe=$2 lib
  lib=$(LD_LIBRARY_PATH="$prefix/lib" ldd "$exe" | sed -n "s/^[[:space:]]*libtessera\.so\.$major => \([^ ]*\).*/\1/p")
  [ "$lib" = "$prefix/lib/libtessera.so.$major" ] || fail "$name loads libtessera from '$lib'"
}

echo "== cmake --install $build --prefix <tmp>/prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || {
  cat "$tmp/install.log"
  fail "cmake --install"
}
for f in bin/tessera include/tessera/tessera.h include/tessera/tessera.hpp \
  include/tessera/ops.hpp include/tessera/version.h lib/libtessera.so "lib/libtessera.so.$major" \
  "lib/libtessera.so.$want" lib/libtessera.a lib/cmake/Tessera/TesseraConfig.cmake \
  lib/cmake/Tessera/TesseraConfigVersion.cmake lib/cmake/Tessera/TesseraTargets.cmake \
  lib/pkgconfig/tessera.pc; do
  [ -e "$prefix/$f" ] || fail "the install has no $f"
done
grep -q "TESSERA_VERSION_STRING \"$want\"" "$prefix/include/tessera/version.h" ||
  fail "include/tessera/version.h does not say $want"
if find "$prefix/include" -type f ! -name '*.h' ! -name '*.hpp' | grep -q .; then
  fail "include/ holds files that are not headers: $(find "$prefix/include" -type f ! -name '*.h' ! -name '*.hpp')"
fi
"$prefix/bin/tessera" --help >/dev/null || fail "the installed CLI does not run"
echo "ok: $(find "$prefix" -type f | wc -l) files: CLI, headers, libraries, CMake package, tessera.pc"

echo "== libtessera.so"
so=$prefix/lib/libtessera.so
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libtessera.so.$major" ] || fail "SONAME is '$soname', expected libtessera.so.$major"
echo "ok: SONAME $soname"
nm -D --defined-only "$so" | awk '{print $NF}' >"$tmp/exported"
c++filt <"$tmp/exported" >"$tmp/exported.demangled"
grep -qx tessera_version "$tmp/exported" || fail "libtessera.so does not export tessera_version"
grep -qx 'tessera::version()' "$tmp/exported.demangled" ||
  fail "libtessera.so does not export tessera::version()"
# The engine's internals: its namespaces, its Tensor (not the public TensorView; any internal
# function taking tensors), the header-only libraries it compiles in.
internal='tessera::(kernels|models|passes|detail|png|utf8)::|tessera::Tensor([^V]|$)|xsimd|nlohmann'
if grep -E "$internal" "$tmp/exported.demangled" >"$tmp/leaks"; then
  cat "$tmp/leaks"
  fail "libtessera.so exports $(wc -l <"$tmp/leaks") internal symbol(s) (engine/api/tessera.map)"
fi
# Anything else must be C API (tessera_*) or in namespace tessera (with its typeinfo and vtables).
if grep -Ev '^(tessera_|tessera::|(typeinfo|typeinfo name|vtable) for tessera::)' \
  "$tmp/exported.demangled" >"$tmp/others"; then
  cat "$tmp/others"
  fail "libtessera.so exports $(wc -l <"$tmp/others") symbol(s) outside the API"
fi
echo "ok: $(wc -l <"$tmp/exported") exported symbols, all of the API"

echo "== the Python module (when the build made one)"
if compgen -G "$build/python/tessera.*.so" >/dev/null; then
  pydir=$prefix/lib/python3/dist-packages
  compgen -G "$pydir/tessera.*.so" >/dev/null || fail "the install has no $pydir/tessera.*.so"
  # Found through its RPATH alone (no LD_LIBRARY_PATH): the installed libtessera.so.
  lib=$(ldd "$pydir"/tessera.*.so | sed -n "s/^[[:space:]]*libtessera\.so\.$major => \([^ ]*\).*/\1/p")
  [ -n "$lib" ] && [ "$(realpath "$lib")" = "$(realpath "$prefix/lib/libtessera.so.$major")" ] ||
    fail "the Python module loads libtessera from '$lib'"
  out=$(cd "$tmp" && PYTHONPATH=$pydir /usr/bin/python3 -c "import tessera
print(tessera.__version__, tessera.Model('$src/models/demo-dates', threads=1).generate('1 May 2020')[0])") ||
    fail "import tessera from $pydir"
  [ "$out" = "$want 2020-05-01" ] || fail "the installed Python module printed '$out'"
  echo "ok: PYTHONPATH=<prefix>/lib/python3/dist-packages: import tessera ($out)"
else
  echo "skipped: the build has no Python module (pybind11-dev not installed)"
fi

echo "== libtessera.a"
ar t "$prefix/lib/libtessera.a" | sort >"$tmp/members"
n_internal=0
while IFS= read -r archive; do
  while IFS= read -r member; do
    grep -qxF "$member" "$tmp/members" ||
      fail "libtessera.a lacks $member of $archive (TESSERA_INTERNAL_LIBS in engine/api/CMakeLists.txt)"
    n_internal=$((n_internal + 1))
  done < <(ar t "$archive")
done < <(find "$build" -name 'libtessera_*.a' ! -path '*/CMakeFiles/*')
[ "$n_internal" -gt 0 ] || fail "no internal archive libtessera_*.a under $build"
echo "ok: libtessera.a holds $(wc -l <"$tmp/members") objects, the $n_internal of the internal libraries among them"

echo "== examples/ with CMake: find_package(Tessera), CMAKE_PREFIX_PATH=<prefix>"
cp -r "$src/examples" "$tmp/examples"
warn=(-Wall -Wextra -Wpedantic -Werror)
(cmake -S "$tmp/examples" -B "$tmp/examples/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="${warn[*]}" -DCMAKE_CXX_FLAGS="${warn[*]}" && cmake --build "$tmp/examples/build") \
  >"$tmp/cmake.log" 2>&1 || {
  cat "$tmp/cmake.log"
  fail "building examples/ with CMake"
}
found=$(sed -n 's/^Tessera_DIR:PATH=//p' "$tmp/examples/build/CMakeCache.txt")
[ "$found" = "$prefix/lib/cmake/Tessera" ] || fail "find_package(Tessera) found '$found'"
for exe in version_cpp version_c; do
  check_uses_installed_so "cmake $exe" "$tmp/examples/build/$exe"
  check_prints_version "cmake $exe (libtessera.so)" "$tmp/examples/build/$exe"
done
if readelf -d "$tmp/examples/build/version_static" | grep -q libtessera; then
  fail "version_static needs libtessera.so"
fi
check_prints_version "cmake version_static (libtessera.a)" "$tmp/examples/build/version_static"

# The generation examples on the shipped demo model: the streamed text, then a summary line.
check_generates() {
  local what=$1 exe=$2 out
  out=$(LD_LIBRARY_PATH="$prefix/lib" "$exe" "$src/models/demo-dates" "1 May 2020") ||
    fail "$what exited with an error"
  [ "$(head -n 1 <<<"$out")" = "2020-05-01" ] || fail "$what printed '$out', expected 2020-05-01"
  echo "ok: $what generates 2020-05-01"
}
for exe in generate_cpp generate_c; do
  check_uses_installed_so "cmake $exe" "$tmp/examples/build/$exe"
  check_generates "cmake $exe (libtessera.so)" "$tmp/examples/build/$exe"
done

# The attention steps on tessera::ops: the public ops header and its exported symbols.
check_uses_installed_so "cmake attention_steps_cpp" "$tmp/examples/build/attention_steps_cpp"
out=$(LD_LIBRARY_PATH="$prefix/lib" "$tmp/examples/build/attention_steps_cpp") ||
  fail "attention_steps_cpp exited with an error: $out"
[ "$(tail -n 1 <<<"$out")" = "all steps agree" ] ||
  fail "attention_steps_cpp printed '$(tail -n 1 <<<"$out")', expected 'all steps agree'"
echo "ok: cmake attention_steps_cpp (libtessera.so): all steps agree"

echo "== examples/ with pkg-config and the system compilers"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion tessera)" = "$want" ] || fail "pkg-config --modversion tessera"
read -r -a cflags <<<"$(pkg-config --cflags tessera)"
read -r -a libs <<<"$(pkg-config --libs tessera)"
read -r -a static_libs <<<"$(pkg-config --static --libs tessera)"
for i in "${!static_libs[@]}"; do  # -ltessera would pick libtessera.so
  [ "${static_libs[$i]}" = -ltessera ] && static_libs[$i]=$prefix/lib/libtessera.a
done
cd "$tmp/examples"
cc -std=c99 "${warn[@]}" "${cflags[@]}" version.c -o pc_version_c "${libs[@]}" ||
  fail "cc version.c \$(pkg-config --cflags --libs tessera)"
c++ "${warn[@]}" "${cflags[@]}" version.cpp -o pc_version_cpp "${libs[@]}" ||
  fail "c++ version.cpp \$(pkg-config --cflags --libs tessera)"
cc -std=c99 "${warn[@]}" "${cflags[@]}" version.c -o pc_version_c_static "${static_libs[@]}" ||
  fail "cc version.c libtessera.a \$(pkg-config --static --libs tessera)"
for exe in pc_version_c pc_version_cpp; do
  check_uses_installed_so "pkg-config $exe" "./$exe"
  check_prints_version "pkg-config $exe (libtessera.so)" "./$exe"
done
if readelf -d pc_version_c_static | grep -q libtessera; then
  fail "pc_version_c_static needs libtessera.so"
fi
check_prints_version "pkg-config pc_version_c_static (libtessera.a)" ./pc_version_c_static
cc -std=c99 "${warn[@]}" "${cflags[@]}" generate.c -o pc_generate_c "${libs[@]}" ||
  fail "cc generate.c \$(pkg-config --cflags --libs tessera)"
c++ "${warn[@]}" "${cflags[@]}" generate.cpp -o pc_generate_cpp_static "${static_libs[@]}" ||
  fail "c++ generate.cpp libtessera.a \$(pkg-config --static --libs tessera)"
check_generates "pkg-config pc_generate_c (libtessera.so)" ./pc_generate_c
check_generates "pkg-config pc_generate_cpp_static (libtessera.a)" ./pc_generate_cpp_static

# The README's C++ example is examples/generate.cpp as it stands (so it compiles, above).
awk '/<!-- example: examples\/generate.cpp -->/{f=1; next} f && /^```cpp/{g=1; next}
     g && /^```/{exit} g' "$src/README.md" >"$tmp/readme_example.cpp"
[ -s "$tmp/readme_example.cpp" ] || fail "README.md has no example marked examples/generate.cpp"
diff -u "$src/examples/generate.cpp" "$tmp/readme_example.cpp" ||
  fail "README.md's example differs from examples/generate.cpp"
echo "ok: README.md's example is examples/generate.cpp"

echo "install_examples: all checks passed"
