// Fuzzes the Llama-3 tokenizer (the real tokenizer.json) with arbitrary bytes: encoding must
// give ids inside the vocabulary, and decoding them must give back exactly the input (byte-level
// BPE is lossless, for invalid UTF-8 too), with special-token parsing off and on.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "tests/fuzz/fuzz_support.h"

// Loads the tokenizer before the first input: under ASan that takes seconds, which must not
// count against the first input's -timeout.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  caduceus::fuzz::Llama3Tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const caduceus::text::Tokenizer& tokenizer = caduceus::fuzz::Llama3Tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool allow_special : {false, true}) {
    const std::vector<int32_t> ids = tokenizer.Encode(text, allow_special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer.vocab_size()) __builtin_trap();
    }
    auto decoded = tokenizer.Decode(ids);
    if (!decoded.ok() || *decoded != text) {
      std::fprintf(stderr, "round trip failed (allow_special %d): %s\n", allow_special,
                   decoded.ok() ? "different bytes" : decoded.status().ToString().c_str());
      __builtin_trap();
    }
  }
  return 0;
}
