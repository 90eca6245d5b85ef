// Fused attention (kernels/attention_body.hpp) against the double reference, on every ISA.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "tests/kernels/attention_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

using namespace kernel_test;

namespace {

std::vector<AttnCase> attention_cases() {
  using L = Layout;
  using MK = MaskKind;
  std::vector<AttnCase> cases;
  auto add = [&](AttnCase c) { cases.push_back(c); };
  // Prefill, fused QKV, causal, several key tiles plus a tail.
  add({.batch = 1,
       .heads = 2,
       .q_len = 130,
       .kv_len = 130,
       .head_dim = 64,
       .causal = true,
       .layout = L::fused});
  // Decode step from a KV cache: one query, causal offset S-1, key padding.
  add({.batch = 2,
       .heads = 3,
       .q_len = 1,
       .kv_len = 200,
       .head_dim = 17,
       .causal = true,
       .offset = 199,
       .key_padding = true,
       .layout = L::cache});
  // Chunked prefill: 5 queries at the end of 130 keys; additive per-head mask with -inf.
  add({.batch = 1,
       .heads = 5,
       .q_len = 5,
       .kv_len = 130,
       .head_dim = 3,
       .causal = true,
       .offset = 125,
       .mask_add = MK::per_head});
  // Broadcast bool mask + key padding, the last batch fully padded (zero rows).
  add({.batch = 2,
       .heads = 4,
       .q_len = 33,
       .kv_len = 65,
       .head_dim = 8,
       .key_padding = true,
       .mask_bool = MK::broadcast,
       .pad_last_batch = true});
  // Broadcast additive mask, head_dim 1.
  add({.batch = 1, .heads = 1, .q_len = 7, .kv_len = 64, .head_dim = 1, .mask_add = MK::broadcast});
  // Negative causal offset: the first 3 queries see no key (zero rows).
  add({.batch = 1,
       .heads = 1,
       .q_len = 10,
       .kv_len = 10,
       .head_dim = 64,
       .causal = true,
       .offset = -3,
       .layout = L::fused});
  // Per-(b,h) bool + additive masks together, one row fully masked, custom scale.
  add({.batch = 2,
       .heads = 2,
       .q_len = 20,
       .kv_len = 150,
       .head_dim = 17,
       .mask_bool = MK::per_head,
       .mask_add = MK::per_head,
       .scale = 0.5f,
       .mask_whole_row = true});
  // Broadcast bool mask with a fully masked row.
  add({.batch = 1,
       .heads = 3,
       .q_len = 6,
       .kv_len = 70,
       .head_dim = 8,
       .mask_bool = MK::broadcast,
       .mask_whole_row = true});
  // Single key.
  add({.batch = 1, .heads = 3, .q_len = 1, .kv_len = 1, .head_dim = 64});
  // No mask at all, cache layout.
  add({.batch = 1, .heads = 2, .q_len = 9, .kv_len = 129, .head_dim = 8, .layout = L::cache});
  // Long decode with every mask kind but bool.
  add({.batch = 1,
       .heads = 1,
       .q_len = 4,
       .kv_len = 300,
       .head_dim = 3,
       .causal = true,
       .offset = 296,
       .key_padding = true,
       .mask_add = MK::broadcast});
  // No keys at all: zero rows.
  add({.batch = 1, .heads = 2, .q_len = 3, .kv_len = 0, .head_dim = 8, .key_padding = true});
  // Left padding: the first 3/4 of the keys padded, so whole key blocks are skipped (every
  // path: one query, few queries, transposed; D = 64 reads V in place, D = 17 copies it).
  for (int64_t q_len : {1, 5, 40, 130})
    for (int64_t hd : {17, 64}) {
      add({.batch = 2,
           .heads = 2,
           .q_len = q_len,
           .kv_len = 300,
           .head_dim = hd,
           .key_padding = true,
           .layout = L::cache,
           .pad_left = true});
    }
  // Large scores (scale 4, q, k in [-2, 2]): the running max must be right.
  add({.batch = 1, .heads = 2, .q_len = 3, .kv_len = 190, .head_dim = 17, .scale = 4.0f});
  // Odd sizes: head_dim {1, 3, 17, 65} x sequence {1, 3, 17, 127, 129}, self-attention (T = S),
  // alternating causal / key padding / additive mask, both the few-query and the transposed path.
  {
    int v = 0;
    for (int64_t hd : {1, 3, 17, 65})
      for (int64_t seq : {1, 3, 17, 127, 129}) {
        AttnCase c{.batch = 1, .heads = 2, .q_len = seq, .kv_len = seq, .head_dim = hd};
        c.causal = v % 2 == 0;
        c.key_padding = v % 3 == 1;
        c.mask_add = v % 4 == 3 ? MK::per_head : MK::none;
        c.layout = v % 3 == 2 ? L::cache : L::separate;
        ++v;
        add(c);
      }
  }
  return cases;
}

}  // namespace

TEST_CASE("attention: masks, layouts, head_dim {1,3,8,17,64,65}, S {1,3,17,127,129}, key tiles") {
  for (Isa isa : tk::supported_isas()) {
    Rng rng;
    for (const AttnCase& c : attention_cases()) run_attention_case(tk::kernel_table(isa), c, rng);
  }
}

TEST_CASE("attention_many: each problem the same bits as attention() gives it alone") {
  // Rows of a continuous batch: one query each over its own cache of a different length (1 to
  // 200 keys), 3 heads of 17, on 1, 2 and 3 threads.
  const int64_t heads = 3, d = 17, e = heads * d, cap = 200;
  const std::vector<int64_t> lens = {1, 33, 200, 7, 64, 129, 2};
  const int64_t n = static_cast<int64_t>(lens.size());
  Rng rng;
  std::vector<std::vector<float>> k(lens.size()), v(lens.size());
  std::vector<float> q(static_cast<size_t>(n * e)), alone(q.size()), many(q.size());
  for (auto& x : q) x = rng.uniform(-1, 1);
  std::vector<tk::AttentionArgs> args(lens.size());
  for (int64_t r = 0; r < n; ++r) {
    k[r].resize(static_cast<size_t>(cap * e));
    v[r].resize(static_cast<size_t>(cap * e));
    for (auto& x : k[r]) x = rng.uniform(-1, 1);
    for (auto& x : v[r]) x = rng.uniform(-1, 1);
    tk::AttentionArgs& a = args[r];
    a.batch = 1;
    a.heads = heads;
    a.q_len = 1;
    a.kv_len = lens[r];
    a.head_dim = d;
    a.q = q.data() + r * e;
    a.q_sb = a.q_st = e;
    a.q_sh = d;
    a.k = k[r].data();
    a.v = v[r].data();
    a.k_sb = a.v_sb = cap * e;
    a.k_ss = a.v_ss = e;
    a.k_sh = a.v_sh = d;
    a.o_sb = a.o_st = e;
    a.o_sh = d;
    a.scale = 0.25f;
    a.causal = true;
    a.causal_offset = lens[r] - 1;
  }
  const int before = tk::num_threads();
  for (int threads : {1, 2, 3}) {
    tk::set_num_threads(threads);
    for (int64_t r = 0; r < n; ++r) {
      tk::AttentionArgs a = args[r];
      a.out = alone.data() + r * e;
      tk::attention(a);
      args[r].out = many.data() + r * e;
    }
    tk::attention_many(args.data(), n);
    CHECK(std::memcmp(alone.data(), many.data(), sizeof(float) * alone.size()) == 0);
    std::fill(many.begin(), many.end(), 0.0f);
    tk::attention_many(args.data(), 1);  // one problem: attention() itself
    CHECK(std::memcmp(alone.data(), many.data(), sizeof(float) * e) == 0);
  }
  tk::set_num_threads(before);
}
