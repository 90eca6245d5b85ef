/* Tessera's C API: the functions libtessera exports with C linkage (all named tessera_*).
   Include as <tessera/tessera.h>; link with -ltessera. */
#ifndef TESSERA_TESSERA_H
#define TESSERA_TESSERA_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/version.h>

/* Marks a function or type the shared library exports (engine/api/tessera.map lists them). */
#ifndef TESSERA_API
#define TESSERA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ----- Version ------------------------------------------------------------------------------ */

/* The library's version, "MAJOR.MINOR.PATCH" (TESSERA_VERSION_STRING of the build that made the
   library; compare with the header's to detect a mismatch). Static storage; never NULL. */
TESSERA_API const char* tessera_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TESSERA_TESSERA_H */
