/* The C ABI (include/tessera/tessera.h) from C: every entry point on good input, and bad input
 * of every kind (NULL pointers, unknown names, dtypes, ranks, shapes, options) answered with a
 * status and a one-line tessera_last_error() naming the problem, never a crash.
 *
 *   test_c_api DEMO_MODEL_DIR API_MODELS_DIR      (API_MODELS_DIR: gpt2/ and bert/ inside)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tessera/tessera.h>

static int failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/* The call returned `status` and the last error mentions `part` on one line. */
static void expect_error(tessera_status got, tessera_status want, const char* part, int line) {
  const char* e = tessera_last_error();
  if (got != want || strstr(e, part) == NULL || strchr(e, '\n') != NULL) {
    fprintf(stderr, "line %d: status %d (want %d), error '%s' (want it to name '%s')\n", line,
            (int)got, (int)want, e, part);
    ++failures;
  }
}
#define EXPECT_ERROR(call, status, part) expect_error((call), (status), (part), __LINE__)

typedef struct {
  char text[4096];
  int calls;
  int stop_after; /* 0: never */
} stream_state;

static int on_piece(const char* piece, void* user) {
  stream_state* s = (stream_state*)user;
  strncat(s->text, piece, sizeof s->text - strlen(s->text) - 1);
  ++s->calls;
  return s->stop_after > 0 && s->calls >= s->stop_after;
}

static void test_demo(const char* dir) {
  tessera_model* model = NULL;
  tessera_session* session = NULL;
  CHECK(tessera_model_load(dir, 1, &model) == TESSERA_OK);
  CHECK(tessera_session_create(model, &session) == TESSERA_OK);
  char* text = NULL;
  CHECK(tessera_generate(session, "1 May 2020", NULL, NULL, NULL, &text) == TESSERA_OK);
  CHECK(text != NULL && strcmp(text, "2020-05-01") == 0);
  tessera_string_free(text);

  /* Streaming: the pieces make the text. Beam search through the options. */
  stream_state s;
  memset(&s, 0, sizeof s);
  tessera_generate_options o = tessera_generate_defaults();
  CHECK(o.method == 0 && o.max_new_tokens == 0 && o.top_p == 1.0f);
  CHECK(tessera_generate(session, "2 Feb 2011", &o, on_piece, &s, &text) == TESSERA_OK);
  CHECK(strcmp(text, "2011-02-02") == 0 && strcmp(s.text, text) == 0 && s.calls >= 10);
  tessera_string_free(text);
  o.method = 2;
  o.num_beams = 3;
  CHECK(tessera_generate(session, "December 25, 2001", &o, NULL, NULL, &text) == TESSERA_OK);
  CHECK(strcmp(text, "2001-12-25") == 0);
  tessera_string_free(text);

  /* Cancelled by the callback: the status, and the text streamed so far. */
  memset(&s, 0, sizeof s);
  s.stop_after = 4;
  text = NULL;
  EXPECT_ERROR(tessera_generate(session, "1 May 2020", NULL, on_piece, &s, &text),
               TESSERA_CANCELLED, "cancelled");
  CHECK(s.calls == 4 && text != NULL && strcmp(text, "2020") == 0);
  tessera_string_free(text);

  /* Bad options and pointers. */
  text = (char*)"untouched";
  o = tessera_generate_defaults();
  o.method = 7;
  EXPECT_ERROR(tessera_generate(session, "x", &o, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "method 7");
  o.method = 1;
  o.temperature = 0;
  EXPECT_ERROR(tessera_generate(session, "x", &o, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "temperature");
  o = tessera_generate_defaults();
  o.top_p = 1.5f;
  o.method = 1;
  EXPECT_ERROR(tessera_generate(session, "x", &o, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "top_p");
  o = tessera_generate_defaults();
  o.max_new_tokens = 100000;
  EXPECT_ERROR(tessera_generate(session, "x", &o, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "max_new_tokens");
  o.max_new_tokens = -1;
  EXPECT_ERROR(tessera_generate(session, "x", &o, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "max_new_tokens");
  EXPECT_ERROR(tessera_generate(session, NULL, NULL, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "prompt");
  EXPECT_ERROR(tessera_generate(NULL, "x", NULL, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "session");
  EXPECT_ERROR(tessera_generate(session, "x", NULL, NULL, NULL, NULL), TESSERA_INVALID_ARGUMENT,
               "text_out");
  CHECK(strcmp(text, "untouched") == 0); /* outputs untouched on failure */

  /* run on the demo: src_ids / tgt_ids -> logits. */
  int64_t src[4] = {5, 6, 7, 2}, tgt[2] = {1, 8};
  int64_t src_shape[2] = {1, 4}, tgt_shape[2] = {1, 2};
  tessera_tensor in[2] = {{"src_ids", TESSERA_I64, 2, src_shape, src},
                          {"tgt_ids", TESSERA_I64, 2, tgt_shape, tgt}};
  tessera_tensor* out = NULL;
  size_t n_out = 0;
  CHECK(tessera_run(session, in, 2, &out, &n_out) == TESSERA_OK);
  CHECK(n_out == 1 && strcmp(out[0].name, "logits") == 0 && out[0].dtype == TESSERA_F32);
  CHECK(out[0].rank == 3 && out[0].shape[0] == 1 && out[0].shape[1] == 2);
  tessera_tensors_free(out, n_out);
  tessera_session_free(session);
  tessera_model_free(model);
}

static void test_run_errors(const char* gpt2_dir) {
  tessera_model* model = NULL;
  tessera_session* session = NULL;
  CHECK(tessera_model_load(gpt2_dir, 0, &model) == TESSERA_OK);
  CHECK(tessera_session_create(model, &session) == TESSERA_OK);
  int64_t ids[3] = {464, 2068, 7586}, shape[2] = {1, 3}, bad_shape[2] = {1, -3};
  tessera_tensor good = {"input_ids", TESSERA_I64, 2, shape, ids};
  tessera_tensor* out = NULL;
  size_t n = 0;
  CHECK(tessera_run(session, &good, 1, &out, &n) == TESSERA_OK);
  CHECK(n == 1 && out[0].rank == 3 && out[0].shape[2] == 50257);
  /* The same request again: the same bytes. */
  tessera_tensor* again = NULL;
  size_t n2 = 0;
  CHECK(tessera_run(session, &good, 1, &again, &n2) == TESSERA_OK);
  CHECK(n2 == 1 && memcmp(out[0].data, again[0].data, 3 * 50257 * sizeof(float)) == 0);
  tessera_tensors_free(again, n2);
  tessera_tensors_free(out, n);

  out = NULL;
  tessera_tensor t = good;
  EXPECT_ERROR(tessera_run(session, NULL, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "inputs");
  t.name = NULL;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "NULL name");
  t = good;
  t.dtype = (tessera_dtype)42;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "dtype 42");
  t = good;
  t.rank = -1;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "rank -1");
  t.rank = 1000;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "rank 1000");
  t = good;
  t.shape = NULL;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "NULL shape");
  t = good;
  t.shape = bad_shape;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "negative");
  t = good;
  t.rank = 1; /* rank mismatch: [1] instead of [B, T] */
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "input_ids");
  t = good;
  t.data = NULL;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "null");
  t = good;
  t.dtype = TESSERA_F32;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "input_ids");
  t = good;
  t.name = "tokens";
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "tokens");
  tessera_tensor twice[2] = {good, good};
  EXPECT_ERROR(tessera_run(session, twice, 2, &out, &n), TESSERA_INVALID_ARGUMENT, "twice");
  int64_t huge[2] = {INT64_MAX, INT64_MAX};
  t = good;
  t.shape = huge;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "too large");
  int64_t big_id[3] = {464, 50257, 1};
  t = good;
  t.data = big_id;
  EXPECT_ERROR(tessera_run(session, &t, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "50257");
  EXPECT_ERROR(tessera_run(session, &good, 1, NULL, &n), TESSERA_INVALID_ARGUMENT, "outputs");
  EXPECT_ERROR(tessera_run(NULL, &good, 1, &out, &n), TESSERA_INVALID_ARGUMENT, "session");
  CHECK(out == NULL); /* untouched by every failure */

  /* The session still works after all that. */
  CHECK(tessera_run(session, &good, 1, &out, &n) == TESSERA_OK);
  tessera_tensors_free(out, n);
  tessera_session_free(session);
  tessera_model_free(model);
}

static void test_load_errors(const char* bert_dir) {
  tessera_model* model = NULL;
  tessera_session* session = NULL;
  EXPECT_ERROR(tessera_model_load(NULL, 0, &model), TESSERA_INVALID_ARGUMENT, "dir");
  EXPECT_ERROR(tessera_model_load("/nonexistent/dir", 0, &model), TESSERA_MODEL_ERROR,
               "/nonexistent/dir");
  EXPECT_ERROR(tessera_model_load(bert_dir, -2, &model), TESSERA_INVALID_ARGUMENT, "threads");
  EXPECT_ERROR(tessera_model_load(bert_dir, 0, NULL), TESSERA_INVALID_ARGUMENT, "out");
  CHECK(model == NULL);
  EXPECT_ERROR(tessera_session_create(NULL, &session), TESSERA_INVALID_ARGUMENT, "model");
  CHECK(tessera_model_load(bert_dir, 0, &model) == TESSERA_OK);
  EXPECT_ERROR(tessera_session_create(model, NULL), TESSERA_INVALID_ARGUMENT, "out");
  CHECK(tessera_session_create(model, &session) == TESSERA_OK);
  char* text = NULL;
  EXPECT_ERROR(tessera_generate(session, "x", NULL, NULL, NULL, &text), TESSERA_INVALID_ARGUMENT,
               "gpt2");
  CHECK(strcmp(tessera_last_error(), "") != 0);
  tessera_session_free(session);
  tessera_model_free(model);
  /* Freeing NULL is a no-op. */
  tessera_model_free(NULL);
  tessera_session_free(NULL);
  tessera_tensors_free(NULL, 3);
  tessera_string_free(NULL);
}

/* tessera_model_load_opts: the weight dtype, the defaults, a bad dtype. */
static void test_load_opts(const char* gpt2_dir) {
  tessera_model_options o = tessera_model_defaults();
  CHECK(o.threads == 0 && o.dtype == NULL && o.isa == NULL && o.passes == NULL);
  tessera_model* model = NULL;
  CHECK(tessera_model_load_opts(gpt2_dir, NULL, &model) == TESSERA_OK);
  CHECK(strcmp(tessera_model_dtype(model), "f32") == 0);
  tessera_model_free(model);
  model = NULL;
  o.threads = 2;
  o.dtype = "int8";
  CHECK(tessera_model_load_opts(gpt2_dir, &o, &model) == TESSERA_OK);
  CHECK(strcmp(tessera_model_dtype(model), "int8") == 0);
  tessera_session* session = NULL;
  CHECK(tessera_session_create(model, &session) == TESSERA_OK);
  int64_t ids[3] = {464, 2068, 7586}, shape[2] = {1, 3};
  tessera_tensor in = {"input_ids", TESSERA_I64, 2, shape, ids};
  tessera_tensor* out = NULL;
  size_t n = 0;
  CHECK(tessera_run(session, &in, 1, &out, &n) == TESSERA_OK);
  CHECK(n == 1 && out[0].rank == 3 && out[0].shape[2] == 50257);
  tessera_tensors_free(out, n);
  tessera_session_free(session);
  tessera_model_free(model);
  model = NULL;
  o.dtype = "fp8";
  EXPECT_ERROR(tessera_model_load_opts(gpt2_dir, &o, &model), TESSERA_INVALID_ARGUMENT, "fp8");
  o.dtype = "bf16";
  o.threads = -1;
  EXPECT_ERROR(tessera_model_load_opts(gpt2_dir, &o, &model), TESSERA_INVALID_ARGUMENT, "threads");
  EXPECT_ERROR(tessera_model_load_opts(NULL, &o, &model), TESSERA_INVALID_ARGUMENT, "dir");
  CHECK(model == NULL);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_c_api DEMO_MODEL_DIR API_MODELS_DIR\n");
    return 2;
  }
  char gpt2[4096], bert[4096];
  snprintf(gpt2, sizeof gpt2, "%s/gpt2", argv[2]);
  snprintf(bert, sizeof bert, "%s/bert", argv[2]);
  CHECK(strcmp(tessera_version(), TESSERA_VERSION_STRING) == 0);
  test_demo(argv[1]);
  test_run_errors(gpt2);
  test_load_errors(bert);
  test_load_opts(gpt2);
  if (failures) {
    fprintf(stderr, "test_c_api: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_c_api: all checks passed\n");
  return 0;
}
