/* The C ABI: load, a session, a streamed generation, every status checked. */
#include <stdio.h>
#include <tessera/tessera.h>

static int print_piece(const char* piece, void* user) {
  (void)user;
  fputs(piece, stdout);
  fflush(stdout);
  return 0; /* nonzero would stop the generation */
}

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : "models/demo-dates";
  const char* prompt = argc > 2 ? argv[2] : "1 May 2020";
  tessera_model* model = NULL;
  tessera_session* session = NULL;
  char* text = NULL;
  int rc = 0;
  tessera_generate_options options = tessera_generate_defaults();
  options.max_new_tokens = 32;
  if (tessera_model_load(dir, 0, &model) != TESSERA_OK ||
      tessera_session_create(model, &session) != TESSERA_OK ||
      tessera_generate(session, prompt, &options, print_piece, NULL, &text) != TESSERA_OK) {
    fprintf(stderr, "error: %s\n", tessera_last_error());
    rc = 2;
  } else {
    printf("\n(tessera %s)\n", tessera_version());
  }
  tessera_string_free(text);
  tessera_session_free(session);
  tessera_model_free(model);
  return rc;
}
