// The packing stage's JSONL fast path: one key's string value out of each line of a chunk, unescaped into one
// buffer, with no Python object per line. A line the scanner is not certain about is marked for the Python
// parser (megatron_ipt/io/jsonl.py), which gives the accepted values and error messages their only definition.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace mipt {

enum LineKind : uint8_t {
  kLineDocument = 0,  // an RFC 8259 object whose key (exactly once, unescaped) holds a string: its text is taken
  kLineBlank = 1,     // only ASCII whitespace (bytes.isspace()): not a document
  kLineOther = 2,     // anything else: left to the Python parser
};

struct JsonlScan {
  std::vector<uint8_t> kinds;       // one per line
  std::vector<int64_t> line_ends;   // one per line: the end of the line in the chunk (after its '\n')
  std::vector<int64_t> text_ends;   // one per document: the end of its text in the text buffer
};

// Split `chunk` into lines at '\n' (the last may lack one) and scan each for `key` (its UTF-8 bytes); the
// documents' texts (UTF-8, escapes resolved) go back to back to `text`, which has room for chunk.size() + 4 bytes
// (texts are never longer than their lines). Returns the bytes written there.
size_t scan_jsonl(std::string_view chunk, std::string_view key, char* text, JsonlScan& out);

}  // namespace mipt
