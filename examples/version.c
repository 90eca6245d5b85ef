/* Prints the version of the Tessera library it runs with (tessera_version(), the C API); fails
   when it differs from the version of the headers it was compiled with. */
#include <stdio.h>
#include <string.h>
#include <tessera/tessera.h>

int main(void) {
  const char* version = tessera_version();
  printf("%s\n", version);
  if (strcmp(version, TESSERA_VERSION_STRING) != 0) {
    fprintf(stderr, "headers are version %s, the library %s\n", TESSERA_VERSION_STRING, version);
    return 1;
  }
  return 0;
}
