// Shared by the native encoders: batches over threads, and the per-thread cache of unit (word/piece) ids.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <thread>
#include <vector>

namespace mipt {

// Threads worth starting for n texts (at least 64 texts each: thread start-up is not free).
inline size_t batch_threads(size_t n, int num_threads) {
  return std::max<size_t>(1, std::min<size_t>(std::max(num_threads, 1), (n + 63) / 64));
}

// Calls encode(thread, text index, tokens, lengths) for every text, slice by slice, then appends each thread's
// tokens and lengths to the outputs in text order.
template <typename Encode>
void encode_in_threads(size_t n, size_t threads, Encode encode, std::vector<int32_t>& tokens, std::vector<int64_t>& lengths) {
  std::vector<std::vector<int32_t>> part_tokens(threads);
  std::vector<std::vector<int64_t>> part_lengths(threads);
  auto work = [&](size_t t) {
    for (size_t i = n * t / threads; i < n * (t + 1) / threads; ++i) encode(t, i, part_tokens[t], part_lengths[t]);
  };
  if (threads == 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (size_t t = 0; t < threads; ++t) pool.emplace_back(work, t);
    for (auto& th : pool) th.join();
  }
  for (size_t t = 0; t < threads; ++t) {
    tokens.insert(tokens.end(), part_tokens[t].begin(), part_tokens[t].end());
    lengths.insert(lengths.end(), part_lengths[t].begin(), part_lengths[t].end());
  }
}

using UnitCache = std::unordered_map<std::string, std::vector<int32_t>>;

// Appends the ids of `unit`, from the cache when it was seen before; encode(unit, ids) computes them.
// Long units are rare and not kept; a full cache is emptied (memory stays bounded on any corpus).
template <typename Encode>
void encode_cached(UnitCache& cache, std::string_view unit, Encode encode, std::vector<int32_t>& out) {
  constexpr size_t kMaxCachedUnit = 64;  // bytes
  constexpr size_t kMaxCacheEntries = 1 << 20;
  if (unit.size() > kMaxCachedUnit) return encode(unit, out);
  auto it = cache.find(std::string(unit));
  if (it == cache.end()) {
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    std::vector<int32_t> ids;
    encode(unit, ids);
    it = cache.emplace(std::string(unit), std::move(ids)).first;
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

}  // namespace mipt
