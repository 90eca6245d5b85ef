// Loads a model once, opens a session and streams a generation (README: "The library").
#include <iostream>
#include <tessera/tessera.hpp>

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "models/demo-dates";
  const std::string prompt = argc > 2 ? argv[2] : "1 May 2020";
  try {
    tessera::Model model(dir);         // immutable after load: share it between threads
    tessera::Session session(model);   // one per thread, request or conversation
    tessera::GenerateOptions options;  // greedy; method, temperature, top_k, ... as the CLI
    options.max_new_tokens = 32;
    auto print = [](const tessera::Token& t) { return bool(std::cout << t.text << std::flush); };
    const std::string text = session.complete(prompt, options, print);
    std::cout << "\n(" << text.size() << " bytes, tessera " << tessera::version() << ")\n";
  } catch (const tessera::Error& e) {  // bad input of any kind, with what was wrong
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
}
