// Python bindings: megatron_ipt._native. Heavy calls release the GIL so worker threads can overlap them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "indexed_builder.h"
#include "jsonl_scan.h"
#include "bytelevel_bpe.h"
#include "sp_bpe.h"

namespace py = pybind11;
using mipt::IndexedBuilder;

namespace {

using Lengths = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

template <typename T>
void add_typed(IndexedBuilder& b, const py::array& tokens, const Lengths& lengths, const std::optional<Lengths>& per_doc) {
  auto t = py::array_t<T, py::array::c_style>::ensure(tokens);
  if (!t) throw std::invalid_argument("tokens must be a C-contiguous integer array");
  const T* tp = t.data();
  const size_t nt = static_cast<size_t>(t.size());
  const int64_t* lp = lengths.data();
  const size_t nl = static_cast<size_t>(lengths.size());
  const int64_t* dp = per_doc ? per_doc->data() : nullptr;
  const size_t nd = per_doc ? static_cast<size_t>(per_doc->size()) : 0;
  py::gil_scoped_release release;
  b.add_batch<T>(tp, nt, lp, nl, dp, nd);
}

void add_batch(IndexedBuilder& b, const py::array& tokens, const Lengths& lengths, const std::optional<Lengths>& per_doc) {
  if (tokens.ndim() != 1 || lengths.ndim() != 1) throw std::invalid_argument("tokens and lengths must be 1-D");
  const char kind = tokens.dtype().kind();
  const auto size = tokens.dtype().itemsize();
  if (kind == 'i' && size == 4) return add_typed<int32_t>(b, tokens, lengths, per_doc);
  if (kind == 'i' && size == 8) return add_typed<int64_t>(b, tokens, lengths, per_doc);
  if (kind == 'u' && size == 2) return add_typed<uint16_t>(b, tokens, lengths, per_doc);
  if (kind == 'u' && size == 4) return add_typed<uint32_t>(b, tokens, lengths, per_doc);
  if (tokens.size() == 0) {  // an empty batch of any dtype (e.g. float64 from numpy defaults) has nothing to check
    return add_typed<int64_t>(b, py::array_t<int64_t>(0), lengths, per_doc);
  }
  throw std::invalid_argument("tokens must be int32, int64, uint16 or uint32, not " +
                              std::string(py::str(tokens.dtype())));
}

// Token lists straight from a tokenizer (a list of lists of Python ints), read with the C API: several times
// cheaper than flattening them through numpy in Python. `append_token` >= 0 is added to every non-empty list.
void add_documents(IndexedBuilder& b, const py::sequence& documents, int64_t append_token) {
  std::vector<int64_t> tokens, lengths;
  lengths.reserve(py::len(documents));
  for (py::handle doc : documents) {
    PyObject* fast = PySequence_Fast(doc.ptr(), "each document must be a sequence of token ids");
    if (fast == nullptr) throw py::error_already_set();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject** items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < n; ++i) {
      const long long id = PyLong_AsLongLong(items[i]);
      if (id == -1 && PyErr_Occurred()) {
        Py_DECREF(fast);
        throw py::error_already_set();
      }
      tokens.push_back(id);
    }
    Py_DECREF(fast);
    const bool append = n > 0 && append_token >= 0;
    if (append) tokens.push_back(append_token);
    lengths.push_back(n + (append ? 1 : 0));
  }
  py::gil_scoped_release release;
  b.add_batch<int64_t>(tokens.data(), tokens.size(), lengths.data(), lengths.size(), nullptr, 0);
}

// UTF-8 views of Python strings; they stay valid while `texts` is alive (the caller holds it).
std::vector<std::string_view> utf8_views(const py::sequence& texts) {
  std::vector<std::string_view> views;
  views.reserve(py::len(texts));
  for (py::handle t : texts) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(t.ptr(), &size);  // fails on lone surrogates: not text
    if (data == nullptr) throw py::error_already_set();
    views.emplace_back(data, static_cast<size_t>(size));
  }
  return views;
}

// A numpy array that takes over a vector's buffer (no copy: the tokens of a batch can be tens of MB).
template <typename T>
py::array_t<T> to_numpy_owning(std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(static_cast<py::ssize_t>(owned->size()), owned->data(), free_when_done);
}

// encode_flat for either encoder: (int32 tokens back to back, int64 length per text).
template <typename Encoder>
py::tuple encode_flat(Encoder& e, const py::sequence& texts, int num_threads, int64_t append_id) {
  auto views = utf8_views(texts);
  std::vector<int32_t> tokens;
  std::vector<int64_t> lengths;
  {
    py::gil_scoped_release release;
    size_t bytes = 0;
    for (const auto& v : views) bytes += v.size();
    tokens.reserve(bytes / 3 + 16);  // real text: 3.5-4.5 bytes a token, so one allocation in nearly every batch
    lengths.reserve(views.size());
    e.encode_batch(views, num_threads, append_id, tokens, lengths);
  }
  return py::make_tuple(to_numpy_owning(std::move(tokens)), to_numpy_owning(std::move(lengths)));
}

inline int64_t at_end(const int64_t* ends, size_t n, int64_t start) { return n ? ends[n - 1] : start; }

// encode_flat over texts already in UTF-8, back to back in `text` (a bytes object), ending at `ends`: what
// scan_jsonl returns, encoded with no Python string per text.
template <typename Encoder>
py::tuple encode_flat_utf8(Encoder& e, const py::bytes& text, const Lengths& ends, int num_threads, int64_t append_id,
                           int64_t start) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(text.ptr(), &data, &size) != 0) throw py::error_already_set();
  const int64_t* ep = ends.data();
  const size_t n = static_cast<size_t>(ends.size());
  std::vector<std::string_view> views;
  views.reserve(n);
  int64_t at = start;
  if (at < 0) throw std::invalid_argument("start must not be negative");
  for (size_t i = 0; i < n; ++i) {
    if (ep[i] < at || ep[i] > size) throw std::invalid_argument("ends must rise within the text");
    views.emplace_back(data + at, static_cast<size_t>(ep[i] - at));
    at = ep[i];
  }
  std::vector<int32_t> tokens;
  std::vector<int64_t> lengths;
  {
    py::gil_scoped_release release;
    tokens.reserve(static_cast<size_t>(at_end(ep, n, start) - start) / 3 + 16);
    lengths.reserve(n);
    e.encode_batch(views, num_threads, append_id, tokens, lengths);
  }
  return py::make_tuple(to_numpy_owning(std::move(tokens)), to_numpy_owning(std::move(lengths)));
}

py::tuple scan_jsonl(const py::buffer& chunk, const std::string& key) {
  const py::buffer_info info = chunk.request();  // bytes, or a memoryview of them (iter_chunks)
  if (info.ndim != 1 || info.itemsize != 1 || (info.ndim == 1 && info.strides[0] != 1)) {
    throw std::invalid_argument("chunk must be contiguous bytes");
  }
  const char* data = static_cast<const char*>(info.ptr);
  const size_t size = static_cast<size_t>(info.size);
  mipt::JsonlScan scan;
  // The texts are written straight into the bytes object returned, then shrunk to what they took.
  PyObject* text = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size + 4));
  if (text == nullptr) throw py::error_already_set();
  py::object owned = py::reinterpret_steal<py::object>(text);
  size_t written;
  {
    py::gil_scoped_release release;
    written = mipt::scan_jsonl(std::string_view(data, size), key, PyBytes_AS_STRING(text), scan);
  }
  PyObject* shrunk = owned.release().ptr();
  if (_PyBytes_Resize(&shrunk, static_cast<Py_ssize_t>(written)) != 0) throw py::error_already_set();
  owned = py::reinterpret_steal<py::object>(shrunk);
  return py::make_tuple(to_numpy_owning(std::move(scan.kinds)), to_numpy_owning(std::move(scan.line_ends)), owned,
                        to_numpy_owning(std::move(scan.text_ends)));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "megatron-ipt native code: the streaming MMIDIDX builder and merger";

  m.def("optimal_dtype_code", &mipt::optimal_dtype_code, py::arg("vocab_size"),
        "Megatron's token dtype code for a vocabulary: 8 (uint16) below 65500, else 4 (int32).");

  m.def(
      "read_index_header",
      [](const std::string& idx_path) {
        auto h = mipt::read_index_header(idx_path);
        py::dict d;
        d["dtype_code"] = h.dtype_code;
        d["sequence_count"] = h.sequence_count;
        d["document_count"] = h.document_count - 1;
        return d;
      },
      py::arg("idx_path"), "Header of an .idx file: dtype code, number of sequences and of documents.");

  m.def("scan_jsonl", &scan_jsonl, py::arg("chunk"), py::arg("key"),
        "Lines of a JSONL chunk -> (uint8 kind per line: 0 document, 1 blank, 2 left to the Python parser; int64 end "
        "of each line; the documents' texts in UTF-8 back to back; int64 end of each text); see csrc/jsonl_scan.h.");

  py::class_<mipt::SentencePieceBPE>(m, "SentencePieceBPE")
      .def(py::init<const std::string&>(), py::arg("model_path"),
           "Load a SentencePiece BPE .model; raises ValueError('unsupported: ...') for models not encoded natively.")
      .def_property_readonly("vocab_size", &mipt::SentencePieceBPE::vocab_size)
      .def("encode_flat", &encode_flat<mipt::SentencePieceBPE>, py::arg("texts"), py::arg("num_threads") = 1,
           py::arg("append_id") = -1,
           "Encode texts into (int32 tokens back to back, int64 length per text); append_id ends non-empty texts.")
      .def("encode_flat_utf8", &encode_flat_utf8<mipt::SentencePieceBPE>, py::arg("text"), py::arg("ends"),
           py::arg("num_threads") = 1, py::arg("append_id") = -1, py::arg("start") = 0,
           "encode_flat of UTF-8 texts back to back in one bytes object from `start`, text i ending at ends[i].")
      .def(
          "encode",
          [](mipt::SentencePieceBPE& e, const py::sequence& texts, int num_threads) {
            auto views = utf8_views(texts);
            std::vector<int32_t> tokens;
            std::vector<int64_t> lengths;
            {
              py::gil_scoped_release release;
              e.encode_batch(views, num_threads, -1, tokens, lengths);
            }
            py::list out;
            size_t at = 0;
            for (int64_t n : lengths) {
              py::list ids(n);
              for (int64_t i = 0; i < n; ++i) ids[i] = tokens[at++];
              out.append(ids);
            }
            return out;
          },
          py::arg("texts"), py::arg("num_threads") = 1, "Encode texts into one list of ids each.");

  py::class_<mipt::ByteLevelBPE>(m, "ByteLevelBPE")
      .def(py::init<const std::vector<std::pair<std::string, int>>&, const std::vector<std::pair<std::string, std::string>>&,
                    int, bool, const std::vector<std::string>&>(),
           py::arg("vocab"), py::arg("merges"), py::arg("pattern"), py::arg("ignore_merges"), py::arg("added_tokens"),
           "vocab: [(token bytes, id)]; merges: [] for tiktoken's rank rule, else [(left bytes, right bytes)] in rank "
           "order; pattern: 1 Llama-3 / original cl100k regex, 2 tiktoken's possessive cl100k regex, 3 GPT-2's regex.")
      .def_property_readonly_static("unicode_version", [](py::object) { return std::string(mipt::unicode_version()); })
      .def("encode_flat", &encode_flat<mipt::ByteLevelBPE>, py::arg("texts"), py::arg("num_threads") = 1,
           py::arg("append_id") = -1, "(int32 tokens, int64 length per text); a length of -1 marks a text left to the library.")
      .def("encode_flat_utf8", &encode_flat_utf8<mipt::ByteLevelBPE>, py::arg("text"), py::arg("ends"),
           py::arg("num_threads") = 1, py::arg("append_id") = -1, py::arg("start") = 0,
           "encode_flat of UTF-8 texts back to back in one bytes object from `start`, text i ending at ends[i].")
      .def("set_affixes", &mipt::ByteLevelBPE::set_affixes, py::arg("prefix"), py::arg("suffix"))
      .def("pretokenize", &mipt::ByteLevelBPE::pretokenize, py::arg("text"));

  py::class_<IndexedBuilder>(m, "IndexedBuilder")
      .def(py::init<const std::string&, uint8_t>(), py::arg("bin_path"), py::arg("dtype_code"))
      .def("add_batch", &add_batch, py::arg("tokens"), py::arg("lengths"),
           py::arg("sequences_per_document") = std::nullopt,
           "Append sequences (tokens back to back, one length each); see csrc/indexed_builder.h.")
      .def("add_documents", &add_documents, py::arg("documents"), py::arg("append_token") = -1,
           "Append one document per token list (empty list: empty document), optionally ending each non-empty one "
           "with append_token.")
      .def(
          "add_index",
          [](IndexedBuilder& b, const std::string& prefix) {
            py::gil_scoped_release release;
            b.add_index(prefix);
          },
          py::arg("path_prefix"))
      .def(
          "finalize",
          [](IndexedBuilder& b, const std::string& idx_path) {
            py::gil_scoped_release release;
            b.finalize(idx_path);
          },
          py::arg("idx_path"))
      .def("abort", &IndexedBuilder::abort)
      .def_property_readonly("sequence_count", &IndexedBuilder::sequence_count)
      .def_property_readonly("document_count", &IndexedBuilder::document_count)
      .def_property_readonly("token_count", &IndexedBuilder::token_count)
      .def_property_readonly("dtype_code", &IndexedBuilder::dtype_code);
}
