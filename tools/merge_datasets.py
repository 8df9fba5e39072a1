#!/usr/bin/env python
"""Merge every `.bin/.idx` dataset in a directory, in sorted name order, into one. Megatron-LM's tool name and
flags, on our native merge (the .bin bytes copied by the kernel); see docs/preprocess.md."""

from __future__ import annotations

import argparse
import os
import sys

from megatron_ipt.errors import ConfigError, UserError
from megatron_ipt.formats.indexed import DTYPE_NAMES, IndexFormatError, check_pair, merge_datasets, read_index_header
from megatron_ipt.io.atomic import check_writable_dir, remove_stale
from megatron_ipt.io.cli import report_error
from megatron_ipt.tokenizers import add_refused_arg


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    g = p.add_argument_group("input data")
    g.add_argument(
        "--input",
        required=True,
        help="directory holding the datasets to merge ({name}.bin + {name}.idx pairs), merged in sorted name order",
    )
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True, help="the merged dataset is {prefix}.bin and {prefix}.idx")
    g = p.add_argument_group("miscellaneous")
    add_refused_arg(g, "--multimodal", reason="multimodal datasets are not built by this stack")
    return p.parse_args(argv)


def find_datasets(directory: str) -> list:
    """The prefixes of the `.bin/.idx` pairs in `directory`, sorted; a file without its partner is an error.
    Unfinished outputs (temporary `*.{pid}@{host}.tmp` names) are not datasets and are skipped."""
    if not os.path.isdir(directory):
        raise ConfigError(f"--input {directory}: not a directory")
    names = {n for n in os.listdir(directory) if os.path.isfile(os.path.join(directory, n))}
    stems = sorted({os.path.splitext(n)[0] for n in names if n.endswith((".bin", ".idx"))})
    for stem in stems:
        for ext, other in ((".bin", ".idx"), (".idx", ".bin")):
            if stem + ext in names and stem + other not in names:
                raise IndexFormatError(f"{os.path.join(directory, stem + ext)}: its {other} file is missing")
    if not stems:
        raise ConfigError(f"--input {directory}: no .bin/.idx datasets in it")
    return [os.path.join(directory, stem) for stem in stems]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        remove_stale(args.input)  # a shard whose writer was killed while publishing is finished (or removed) first
        prefixes = find_datasets(args.input)
        output_dir = os.path.dirname(os.path.abspath(args.output_prefix))
        if os.path.samefile(output_dir, args.input) if os.path.isdir(output_dir) else False:
            raise ConfigError(
                f"--output-prefix {args.output_prefix} is inside --input {args.input}: a second run would merge the "
                f"output into itself; write it elsewhere"
            )
        check_writable_dir(output_dir)  # before the copy, not after it
        for prefix in prefixes:
            check_pair(prefix)  # a truncated or mismatched input stops here, named
        headers = {prefix: read_index_header(prefix) for prefix in prefixes}
        dtypes = {DTYPE_NAMES.get(h["dtype_code"], h["dtype_code"]) for h in headers.values()}
        if len(dtypes) > 1:
            by_dtype = {}
            for prefix, h in headers.items():
                by_dtype.setdefault(DTYPE_NAMES.get(h["dtype_code"]), []).append(os.path.basename(prefix))
            raise IndexFormatError(
                "the datasets store tokens in different dtypes (different tokenizers?): "
                + "; ".join(f"{d}: {', '.join(names[:3])}" for d, names in by_dtype.items())
            )
        merge_datasets(prefixes, args.output_prefix)
    except (UserError, OSError) as e:
        return report_error(e, has_skip_flag=False)
    documents = sum(h["document_count"] for h in headers.values())
    sequences = sum(h["sequence_count"] for h in headers.values())
    print(
        f"merged {len(prefixes)} dataset(s) ({documents:,} documents, {sequences:,} sequences) into "
        f"{args.output_prefix}.{{bin,idx}}\nUse in training:\n  --data-path {args.output_prefix}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
