// Prints the version of the Tessera library it runs with (tessera::version()); fails when it
// differs from the version of the headers it was compiled with.
#include <tessera/tessera.hpp>

#include <cstdio>
#include <cstring>

int main() {
  const char* version = tessera::version();
  std::printf("%s\n", version);
  if (std::strcmp(version, TESSERA_VERSION_STRING) != 0) {
    std::fprintf(stderr, "headers are version %s, the library %s\n", TESSERA_VERSION_STRING,
                 version);
    return 1;
  }
  return 0;
}
