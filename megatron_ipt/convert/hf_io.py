"""Hugging Face model directories: read config + safetensors (one file or sharded with an index), write them back
atomically (a temporary sibling directory renamed into place once complete)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Tuple

import torch

from megatron_ipt.convert.llama import ConversionError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files besides the weights that make the directory usable by `from_pretrained` for text generation; a tokenizer
# is there when one of the first three is.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
MAX_SHARD_BYTES = 5 * 1024**3  # transformers' customary shard size
# Non-parameter tensors some older exports carry; recomputed by every implementation.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# Weights we convert: floating point (an integer or boolean tensor would be silently cast into the model).
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def _read_json_object(path: str) -> dict:
    """A JSON file whose top level is an object; ConversionError naming `path` otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        raise ConversionError(f"{path}: not valid JSON: {reason}") from None
    except OSError as error:
        raise ConversionError(f"{path}: cannot read: {error.strerror or error}") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path}: expected a JSON object at the top level, got {type(value).__name__}")
    return value


def read_config(hf_dir: str) -> dict:
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise ConversionError(f"{hf_dir}: no config.json (expected a Hugging Face model directory)")
    return _read_json_object(path)


def _shard_path(hf_dir: str, index: str, name: str, file) -> str:
    """The shard an index's weight_map names: a plain file name in the model directory, never a path that could
    read a file elsewhere (`../x.safetensors`, `/etc/...`, `sub/x`)."""
    if not isinstance(file, str) or file in ("", ".", "..") or any(c in file for c in "/\\\0"):
        raise ConversionError(
            f"{index}: weight_map[{name!r}] is {file!r}; a shard must be a plain file name in {hf_dir}"
        )
    return os.path.join(hf_dir, file)


class SafetensorsReader:
    """Tensors of a HF directory by name, each file opened lazily once (a big model is never read twice).
    A corrupt file (truncated, bad header, header past the end) is a ConversionError naming it."""

    def __init__(self, hf_dir: str):
        from safetensors import safe_open

        self._open = safe_open
        self.hf_dir = hf_dir
        self.files: Dict[str, str] = {}  # tensor name -> file path
        self._handles: Dict[str, object] = {}
        index = os.path.join(hf_dir, INDEX_FILE)
        if os.path.isfile(index):
            weight_map = _read_json_object(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ConversionError(f"{index}: no weight_map object")
            self.files = {name: _shard_path(hf_dir, index, name, file) for name, file in weight_map.items()}
        elif os.path.isfile(os.path.join(hf_dir, SINGLE_FILE)):
            path = os.path.join(hf_dir, SINGLE_FILE)
            self.files = {name: path for name in self._guard(path, None, lambda: list(self._file(path).keys()))}
        else:
            found = sorted(os.listdir(hf_dir))
            raise ConversionError(
                f"{hf_dir}: neither {SINGLE_FILE} nor {INDEX_FILE} (found: {found}); only "
                f"safetensors weights are read (re-save PyTorch .bin weights with "
                f"save_pretrained(..., safe_serialization=True))"
            )
        for path in sorted(set(self.files.values())):
            if not os.path.isfile(path):
                raise ConversionError(f"{path}: listed in {INDEX_FILE} but missing")

    @staticmethod
    def _guard(path: str, name, read, *args):
        """`read(*args)`, with safetensors' and the OS's errors turned into a ConversionError naming the file (and
        the tensor)."""
        from safetensors import SafetensorError

        try:
            return read(*args)
        except (SafetensorError, OSError) as error:
            what = f"{path}: tensor {name!r}" if name else path
            raise ConversionError(f"{what}: not a readable safetensors file: {error}") from None

    def _file(self, path: str):
        if path not in self._handles:
            self._handles[path] = self._open(path, framework="pt")
        return self._handles[path]

    def _handle(self, name: str):
        path = self.files[name]
        return self._guard(path, None, self._file, path)

    def check(self, expected: Dict[str, Tuple[int, ...]]) -> None:
        """Before converting anything: every expected tensor present with its shape and a floating-point dtype
        (read from the file headers), nothing else present."""
        missing = sorted(set(expected) - set(self.files))
        unexpected = sorted(n for n in set(self.files) - set(expected) if not n.endswith(IGNORED_SUFFIXES))
        if missing or unexpected:
            raise ConversionError(
                f"{self.hf_dir}: tensors missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} for the model "
                f"config.json describes"
            )
        for name, shape in expected.items():
            handle = self._handle(name)
            found, dtype = self._guard(self.files[name], name, self._header, handle, name)
            if found != shape:
                raise ConversionError(
                    f"{self.files[name]}: tensor {name!r} has shape {found}, but config.json implies {shape}"
                )
            if dtype not in FLOAT_DTYPES:
                raise ConversionError(
                    f"{self.files[name]}: tensor {name!r} has dtype {dtype}; weights must be one of "
                    f"{', '.join(FLOAT_DTYPES)}"
                )

    @staticmethod
    def _header(handle, name: str):
        tensor = handle.get_slice(name)
        return tuple(tensor.get_shape()), tensor.get_dtype()

    def get(self, name: str) -> torch.Tensor:
        handle = self._handle(name)
        return self._guard(self.files[name], name, handle.get_tensor, name)


def check_new_directory(path: str) -> None:
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ConversionError(f"{path}: exists and is not an empty directory; choose a new output directory")


@contextmanager
def atomic_directory(final: str) -> Iterator[str]:
    """Yield a temporary sibling of `final` to fill; rename it to `final` only if the block completes."""
    check_new_directory(final)
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        if os.path.isdir(final):
            os.rmdir(final)  # empty (checked above)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_safetensors(out_dir: str, tensors: Iterable[Tuple[str, torch.Tensor]], dtype: torch.dtype) -> List[str]:
    """Write tensors as `model.safetensors`, or as `model-0000i-of-0000n.safetensors` shards of at most
    MAX_SHARD_BYTES plus the index transformers reads. Returns the files written."""
    from safetensors.torch import save_file

    shards: List[List[Tuple[str, torch.Tensor]]] = [[]]
    size, total = 0, 0
    for name, tensor in tensors:
        nbytes = tensor.numel() * dtype.itemsize
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, tensor))
        size += nbytes
        total += nbytes
    names = (
        [SINGLE_FILE]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for file, shard in zip(names, shards):
        # contiguous copies in the export dtype, one shard at a time
        path = os.path.join(out_dir, file)
        try:
            save_file({n: t.detach().to(dtype).contiguous() for n, t in shard}, path, metadata={"format": "pt"})
        except Exception as e:  # safetensors reports a full disk as its own error type, not an OSError
            raise ConversionError(f"{path}: cannot write: {e}") from None
        weight_map.update({n: file for n, _ in shard})
    if len(shards) > 1:
        with open(os.path.join(out_dir, INDEX_FILE), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        names.append(INDEX_FILE)
    return names


def write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def has_tokenizer(directory: str) -> bool:
    return any(os.path.isfile(os.path.join(directory, name)) for name in TOKENIZER_FILES[:3])


def copy_tokenizer_files(src_dir: str, out_dir: str) -> List[str]:
    if not has_tokenizer(src_dir):
        raise ConversionError(f"{src_dir}: no tokenizer ({', '.join(TOKENIZER_FILES[:3])})")
    copied = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(src_dir, name))]
    for name in copied:
        shutil.copy2(os.path.join(src_dir, name), os.path.join(out_dir, name))
    return copied
