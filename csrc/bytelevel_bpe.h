// Native encoder for byte-level BPE (GPT-4's cl100k_base / Llama-3 family, and GPT-2's), id-exact with tiktoken or with the
// Hugging Face `tokenizers` library for the configurations it accepts; the Python side checks a tokenizer's
// configuration and uses the library for anything else.
//
// Pipeline: the pre-tokenization regex (three known patterns, matched by hand-written code with the regex's exact
// leftmost-first semantics), then BPE over the UTF-8 bytes of each piece. Two merge rules exist and both are
// implemented: tiktoken merges the adjacent pair whose concatenation has the lowest rank; tokenizers merges the
// adjacent pair with the lowest rank in its merges list. A whole piece that is one token is emitted directly
// (always in tiktoken; with `ignore_merges` in tokenizers). Pieces repeat heavily, so their ids are cached.
//
// Texts the encoder must not guess at are flagged (length -1) for the caller to encode with the library:
// texts holding an added/special token's text (the library splits those out first), and texts holding a code
// point unassigned in our Unicode tables (a newer Unicode in the library's regex engine may class it).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "encode_common.h"

namespace mipt {

const char* unicode_version();  // of the tables the pre-tokenizer classes code points with

class ByteLevelBPE {
 public:
  enum Pattern { kLlama3 = 1, kCl100kPossessive = 2, kGpt2 = 3 };

  // vocab: raw token bytes -> id. merges: empty for tiktoken's rank rule, else (left bytes, right bytes) in rank order.
  ByteLevelBPE(const std::vector<std::pair<std::string, int>>& vocab,
               const std::vector<std::pair<std::string, std::string>>& merges, int pattern, bool ignore_merges,
               const std::vector<std::string>& added_tokens);

  void encode_batch(const std::vector<std::string_view>& texts, int num_threads, int64_t append_id,
                    std::vector<int32_t>& tokens, std::vector<int64_t>& lengths);

  // Ids wrapped around every text, empty ones included (a tokenizer's BOS/EOS template).
  void set_affixes(const std::vector<int32_t>& prefix, const std::vector<int32_t>& suffix) {
    prefix_ = prefix;
    suffix_ = suffix;
  }

  // Pre-tokenization alone (for tests): the pieces of one text.
  std::vector<std::string> pretokenize(std::string_view text) const;

 private:
  using Cache = UnitCache;
  bool encode_one(std::string_view text, Cache& cache, std::vector<int32_t>& out) const;
  template <typename Fn>
  bool split(std::string_view text, Fn emit) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  bool holds_added_token(std::string_view text) const;

  std::vector<std::string> token_bytes_;
  std::unordered_map<std::string_view, int> ids_;
  std::unordered_map<uint64_t, std::pair<int, int>> merges_;  // (left id, right id) -> (rank, merged id)
  bool tiktoken_rule_;
  int pattern_;
  bool ignore_merges_;
  int byte_ids_[256];  // -1: no such single-byte token (tokenizers' rule only: the library drops that byte)
  std::vector<std::string> added_tokens_;
  std::vector<int32_t> prefix_, suffix_;
  bool added_first_byte_[256] = {};
  std::string added_first_bytes_;  // the distinct first bytes of the added tokens
  std::vector<Cache> caches_;
  std::mutex mutex_;
};

}  // namespace mipt
