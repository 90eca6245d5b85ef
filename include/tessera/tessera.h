/* Tessera's C ABI: opaque handles and status codes over the C++ API (tessera.hpp).
 *
 *   tessera_model* model;  tessera_session* session;  char* text;
 *   if (tessera_model_load("models/demo-dates", 0, &model) != TESSERA_OK)
 *     fprintf(stderr, "%s\n", tessera_last_error());
 *   tessera_session_create(model, &session);
 *   tessera_generate(session, "1 May 2020", NULL, NULL, NULL, &text);
 *   puts(text);  tessera_string_free(text);
 *   tessera_session_free(session);  tessera_model_free(model);
 *
 * Every function returning tessera_status leaves its outputs untouched unless it returns
 * TESSERA_OK (tessera_generate: see there), and on failure sets this thread's one-line
 * tessera_last_error(). No exception crosses this interface, and no C++ type is in it.
 * A model may be shared by any number of threads; a session is used by one thread at a time
 * (tessera.hpp says more). Memory the library returns is freed with the matching *_free.
 */
#ifndef TESSERA_TESSERA_H
#define TESSERA_TESSERA_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/version.h>

#ifndef TESSERA_API
#define TESSERA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  TESSERA_OK = 0,
  TESSERA_INVALID_ARGUMENT = 1, /* bad input: NULL pointers, names, dtypes, shapes, options */
  TESSERA_MODEL_ERROR = 2,      /* the model directory cannot be loaded */
  TESSERA_CANCELLED = 3,        /* the token callback stopped the generation */
  TESSERA_INTERNAL = 4          /* out of memory, or a bug */
} tessera_status;

typedef enum {
  TESSERA_F32 = 0,
  TESSERA_F16 = 1,
  TESSERA_BF16 = 2,
  TESSERA_I64 = 3,
  TESSERA_I32 = 4,
  TESSERA_U8 = 5,
  TESSERA_BOOL = 6,
  TESSERA_I8 = 7 /* the int8 weights of a quantized model directory; no model input is I8 */
} tessera_dtype;

/* A named tensor, row-major and contiguous. Inputs are read in place during the call. */
typedef struct {
  const char* name;
  tessera_dtype dtype;
  int32_t rank;
  const int64_t* shape;
  void* data;
} tessera_tensor;

typedef struct tessera_model tessera_model;
typedef struct tessera_session tessera_session;

typedef struct {
  int32_t max_new_tokens;   /* 0: 64, or what the positions allow after the prompt */
  int32_t method;           /* 0 greedy, 1 sample, 2 beam */
  float temperature;        /* sample: logits / T, T > 0 */
  int32_t top_k;            /* sample: 0 = off */
  float top_p;              /* sample: 1 = off */
  float repetition_penalty; /* 1 = off */
  uint64_t seed;            /* sample */
  int32_t num_beams;        /* beam */
} tessera_generate_options;

/* Called with the text each generated token completes (may be ""); nonzero: stop. */
typedef int (*tessera_token_fn)(const char* piece, void* user);

/* "MAJOR.MINOR.PATCH". */
TESSERA_API const char* tessera_version(void);
/* This thread's last failure, one line ("" if none); valid until this thread's next call. */
TESSERA_API const char* tessera_last_error(void);

/* Loads a model directory; threads 0: every core. */
TESSERA_API tessera_status tessera_model_load(const char* dir, int32_t threads,
                                              tessera_model** out);

/* The options of tessera_model_load_opts: start from tessera_model_defaults() (fields may be
 * added at the end; the defaults function fills them). Strings may be NULL ("": the default). */
typedef struct {
  int32_t threads;    /* 0: every core */
  const char* dtype;  /* GEMM weights: "f32", "bf16", "int8"; NULL/"": what the directory holds */
  const char* isa;    /* "avx512", "avx2", "generic"; NULL/"": the best this CPU has */
  const char* passes; /* graph passes as TESSERA_PASSES takes; NULL/"": all */
} tessera_model_options;
/* threads 0, every string NULL. */
TESSERA_API tessera_model_options tessera_model_defaults(void);
/* tessera_model_load with options; opts NULL: the defaults. */
TESSERA_API tessera_status tessera_model_load_opts(const char* dir,
                                                   const tessera_model_options* opts,
                                                   tessera_model** out);
/* The type the model's GEMM weights run as: "f32", "bf16" or "int8" (static storage). */
TESSERA_API const char* tessera_model_dtype(const tessera_model* model);
TESSERA_API void tessera_model_free(tessera_model* model); /* NULL: nothing */

TESSERA_API tessera_status tessera_session_create(const tessera_model* model,
                                                  tessera_session** out);
TESSERA_API void tessera_session_free(tessera_session* session); /* NULL: nothing */

/* One forward pass with the names of `tessera run`. On success *outputs holds *n_outputs
 * tensors (names, shapes and data owned by the array: free it with tessera_tensors_free). */
TESSERA_API tessera_status tessera_run(tessera_session* session, const tessera_tensor* inputs,
                                       size_t n_inputs, tessera_tensor** outputs,
                                       size_t* n_outputs);
TESSERA_API void tessera_tensors_free(tessera_tensor* tensors, size_t n);

/* Greedy, to eos or the limit. */
TESSERA_API tessera_generate_options tessera_generate_defaults(void);
/* Generates from a text prompt (the model directory's tokenizer). opts NULL: the defaults;
 * on_token NULL: no streaming. On TESSERA_OK, and on TESSERA_CANCELLED (the text streamed so
 * far), *text_out is the generated text, to free with tessera_string_free. */
TESSERA_API tessera_status tessera_generate(tessera_session* session, const char* prompt,
                                            const tessera_generate_options* opts,
                                            tessera_token_fn on_token, void* user, char** text_out);
TESSERA_API void tessera_string_free(char* s); /* NULL: nothing */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TESSERA_TESSERA_H */
