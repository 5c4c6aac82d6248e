"""llm_source: where the frozen LLM's files come from (local, s3:// via a real moto server, never the
hub), downloaded once per node and verified, and what may be loaded (remote code, pickled weights)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seller_dist import storage
from seller_dist.errors import UserError, one_line_message
from seller_dist.model import llm_source
from seller_dist.model.llm_source import (
    LLMNotFoundError,
    LLMSourceError,
    LoadPlan,
    check_loadable,
    fetch_llm,
    load_causal_lm,
    load_tokenizer_files,
    resolve_llm_path,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama checkpoint whose weights are an index + several safetensors shards."""
    from transformers import AutoModelForCausalLM

    from tests.tiny_llm import build_tiny_llm

    d = build_tiny_llm(tmp_path_factory.mktemp("ckpt") / "tiny", hidden=32, layers=1, heads=2, vocab_size=300)
    model = AutoModelForCausalLM.from_pretrained(d)
    os.remove(os.path.join(d, "model.safetensors"))
    model.save_pretrained(d, max_shard_size="20KB")
    assert len([n for n in os.listdir(d) if n.endswith(".safetensors")]) >= 3
    return d


def _files(root: str | Path) -> dict[str, bytes]:
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stats(root: str | Path) -> dict[str, tuple[int, int]]:
    root = Path(root)
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _upload(src: str, url: str) -> dict[str, bytes]:
    files = _files(src)
    fs, path = storage.filesystem(url)  # one client for all (a client per file costs ~0.3 s)
    fs.pipe({f"{path}/{rel}": data for rel, data in files.items()})
    return files


# A second Python process resolving the same URL: prints {"local_dir", "downloaded"}, logs to stderr.
# argv: url cache_dir [barrier_dir me other]: with a barrier, waits until the other process is ready
# too, and slows each file's download by 0.1 s so the two really overlap.
_RESOLVE = r"""
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from seller_dist import storage
from seller_dist.model.llm_source import fetch_llm
url, cache = sys.argv[1:3]
if len(sys.argv) > 3:
    barrier, me, other = Path(sys.argv[3]), sys.argv[4], sys.argv[5]
    real = storage.with_retries
    def slow(fn, what, cfg=None):
        time.sleep(0.1)
        return real(fn, what, cfg)
    storage.with_retries = slow
    (barrier / me).touch()
    while not (barrier / other).exists():
        time.sleep(0.005)
src = fetch_llm(url, cache)
print(json.dumps({"local_dir": src.local_dir, "downloaded": src.downloaded}))
"""


def _resolve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", _RESOLVE, *args]


def _run_resolve(*args: str) -> tuple[dict, str]:
    proc = subprocess.run(_resolve_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


# ------------------------------------------------------------------------------------------ s3
@pytest.mark.slow
def test_s3_checkpoint_downloaded_verified_and_reused_by_another_process(tiny_ckpt, s3_bucket, tmp_path):
    url = f"{s3_bucket}/models/tiny"
    source = _upload(tiny_ckpt, url)
    cache = str(tmp_path / "cache")

    first = fetch_llm(url, cache)
    assert first.downloaded
    assert first.local_dir == str(Path(cache, url.replace("://", "_").replace("/", "_")))
    got = _files(first.local_dir)
    manifest_text = got.pop(".complete.json").decode()
    assert got == source  # same names, same bytes
    manifest = json.loads(manifest_text)
    assert manifest["source"] == url
    by_path = {f["path"]: f for f in manifest["files"]}
    assert sorted(by_path) == sorted(source)
    for rel, data in source.items():
        f = by_path[rel]
        assert f["size"] == f["remote_size"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        assert f["etag"] == hashlib.md5(data).hexdigest()  # moto's single-part ETag: the md5
    assert "testing" not in manifest_text and "AWS" not in manifest_text  # no credentials written
    assert not list(Path(cache).glob("*.tmp-*"))
    assert resolve_llm_path(url, cache) == first.local_dir  # same process: reused

    before = _stats(first.local_dir)
    out, err = _run_resolve(url, cache)  # a SECOND process
    assert out == {"local_dir": first.local_dir, "downloaded": False}
    assert f"reusing verified copy of {url} at {first.local_dir}" in err
    assert "downloaded " not in err
    assert _stats(first.local_dir) == before  # no file rewritten (same inodes, same mtimes)


@pytest.mark.slow
def test_two_processes_started_together_download_once(tiny_ckpt, s3_bucket, tmp_path):
    url = f"{s3_bucket}/models/tiny"
    source = _upload(tiny_ckpt, url)
    cache, barrier = str(tmp_path / "cache"), tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            _resolve_cmd(url, cache, str(barrier), me, other),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append((json.loads(out), err))
    assert sorted(r["downloaded"] for r, _ in results) == [False, True]  # exactly one downloaded
    assert {r["local_dir"] for r, _ in results} == {
        str(Path(cache, url.replace("://", "_").replace("/", "_")))
    }
    waiter = next(err for r, err in results if not r["downloaded"])
    downloader = next(err for r, err in results if r["downloaded"])
    # the lock was really contended: the second waited, then found the first's complete copy
    assert "waiting for another process on this node to fetch" in waiter
    assert "reusing verified copy" in waiter and "downloaded s3://" not in waiter
    assert f"downloaded {url} ({len(source)} files" in downloader
    got = _files(results[0][0]["local_dir"])
    got.pop(".complete.json")
    assert got == source
    assert sorted(p.name for p in Path(cache).iterdir()) == sorted(
        [Path(results[0][0]["local_dir"]).name, Path(results[0][0]["local_dir"]).name + ".lock"]
    )


@pytest.mark.slow
def test_truncated_or_deleted_cached_file_is_downloaded_again(tiny_ckpt, s3_bucket, tmp_path, caplog):
    url = f"{s3_bucket}/models/tiny"
    source = _upload(tiny_ckpt, url)
    cache = str(tmp_path / "cache")
    local = Path(fetch_llm(url, cache).local_dir)
    shard = "model-00001-of-00004.safetensors"
    assert shard in source
    (local / shard).write_bytes(source[shard][:100])  # truncated, e.g. a full disk

    caplog.set_level("INFO", logger="seller_dist.model.llm_source")
    again = fetch_llm(url, cache)
    assert again.downloaded and again.local_dir == str(local)
    assert (
        f"cached copy of {url} at {local} has {shard} at 100 bytes, {len(source[shard])} expected "
        "(truncated or changed): downloading it again"
    ) in caplog.text
    got = _files(local)
    got.pop(".complete.json")
    assert got == source

    caplog.clear()
    (local / "tokenizer.json").unlink()
    assert fetch_llm(url, cache).downloaded
    assert f"cached copy of {url} at {local} lacks tokenizer.json: downloading it again" in caplog.text
    assert (local / "tokenizer.json").read_bytes() == source["tokenizer.json"]

    caplog.clear()
    (local / ".complete.json").unlink()  # an interrupted or pre-manifest copy
    assert fetch_llm(url, cache).downloaded
    assert "has no .complete.json (an interrupted or older download)" in caplog.text
    assert not fetch_llm(url, cache).downloaded


@pytest.mark.slow
def test_download_shorter_than_the_listing_fails_naming_the_file(tiny_ckpt, s3_bucket, tmp_path, monkeypatch):
    url = f"{s3_bucket}/models/tiny"
    source = _upload(tiny_ckpt, url)
    shard = "model-00002-of-00004.safetensors"
    real_filesystem = storage.filesystem

    class CutShort:
        """The real S3 filesystem, except that one object arrives 10 bytes short."""

        def __init__(self, fs):
            self._fs = fs

        def __getattr__(self, name):
            return getattr(self._fs, name)

        def get_file(self, rpath, lpath, **kw):
            self._fs.get_file(rpath, lpath, **kw)
            if rpath.endswith(shard):
                with open(lpath, "r+b") as f:
                    f.truncate(len(source[shard]) - 10)

    def cut_short_filesystem(u, cfg=None):
        fs, path = real_filesystem(u, cfg)
        return CutShort(fs), path

    monkeypatch.setattr(storage, "filesystem", cut_short_filesystem)
    cache = tmp_path / "cache"
    with pytest.raises(LLMSourceError) as e:
        fetch_llm(url, str(cache))
    assert str(e.value) == (
        f"model.llm_path={url}: downloaded {shard} has {len(source[shard]) - 10} bytes but the store "
        f"lists {len(source[shard])} (cut short, or replaced while downloading); run again"
    )
    assert [p.name for p in cache.iterdir()] == [url.replace("://", "_").replace("/", "_") + ".lock"]


@pytest.mark.slow
def test_filesystem_without_flock_still_downloads_whole(tiny_ckpt, s3_bucket, tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    url = f"{s3_bucket}/models/tiny"
    source = _upload(tiny_ckpt, url)
    monkeypatch.setattr(fcntl, "flock", no_flock)
    caplog.set_level("WARNING", logger="seller_dist.model.llm_source")
    first = fetch_llm(url, str(tmp_path / "cache"))
    assert first.downloaded
    assert (
        "no file locking on this filesystem ([Errno 37] No locks available); ranks may download twice"
        in caplog.text
    )
    got = _files(first.local_dir)
    got.pop(".complete.json")
    assert got == source
    assert fetch_llm(url, str(tmp_path / "cache")) == llm_source.LLMSource(first.local_dir, downloaded=False)


@pytest.mark.slow
def test_empty_prefix_names_the_url(s3_bucket, tmp_path):
    with pytest.raises(LLMNotFoundError, match=rf"^model.llm_path={s3_bucket}/nothing: nothing stored under"):
        resolve_llm_path(f"{s3_bucket}/nothing", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------- local paths
def test_hub_id_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./Qwen/Qwen2.5-7B-Instruct here
    t0 = time.monotonic()
    with pytest.raises(LLMSourceError) as e:
        resolve_llm_path("Qwen/Qwen2.5-7B-Instruct", str(tmp_path / "cache"))
    assert time.monotonic() - t0 < 1.0
    assert isinstance(e.value, UserError)
    assert str(e.value) == (
        "model.llm_path=Qwen/Qwen2.5-7B-Instruct: no local folder of that name, and this job does not "
        "download from the Hugging Face hub; download it first (e.g. `huggingface-cli download "
        "Qwen/Qwen2.5-7B-Instruct --local-dir /models/qwen2.5-7b-instruct`) and set model.llm_path to "
        "that folder or to an s3:// copy of it"
    )
    assert one_line_message(e.value) == str(e.value)
    assert not (tmp_path / "cache").exists()


def test_hub_like_relative_folder_that_exists_is_local(tiny_ckpt, tmp_path, monkeypatch):
    shutil.copytree(tiny_ckpt, tmp_path / "meta-llama" / "Llama-3.1-8B")
    monkeypatch.chdir(tmp_path)
    assert fetch_llm("meta-llama/Llama-3.1-8B", "cache") == llm_source.LLMSource(
        "meta-llama/Llama-3.1-8B", downloaded=False
    )


def test_missing_local_folder_and_folder_without_config(tmp_path):
    missing = str(tmp_path / "models" / "nope")
    with pytest.raises(LLMNotFoundError) as e:
        resolve_llm_path(missing, str(tmp_path / "cache"))
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, UserError)
    assert str(e.value) == (
        f"model.llm_path={missing}: no such local folder (relative paths start at {os.getcwd()}); "
        "give a Hugging Face checkpoint directory or an s3:// / gs:// prefix"
    )
    assert one_line_message(e.value) == str(e.value)
    with pytest.raises(LLMNotFoundError) as e:
        resolve_llm_path(str(tmp_path), str(tmp_path / "cache"))
    assert str(e.value) == (
        f"model.llm_path={tmp_path}: no config.json there; give a Hugging Face checkpoint directory "
        "(e.g. the output of `seller-dist bootstrap-llm` or `huggingface-cli download`)"
    )


def test_local_folder_is_used_in_place(tiny_ckpt, tmp_path):
    assert resolve_llm_path(tiny_ckpt, str(tmp_path / "cache")) == tiny_ckpt
    assert resolve_llm_path(f"file://{tiny_ckpt}", str(tmp_path / "cache")) == tiny_ckpt
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------- remote code
def _with_remote_code(tiny_ckpt: str, dest: Path, marker: Path) -> Path:
    shutil.copytree(tiny_ckpt, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (dest / "config.json").write_text(json.dumps(cfg))
    (dest / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return dest


def test_remote_code_is_refused_unless_trusted(tiny_ckpt, tmp_path):
    marker = tmp_path / "remote-code-ran"
    d = _with_remote_code(tiny_ckpt, tmp_path / "evil", marker)
    msg = (
        f'{d}/config.json has "auto_map" ({{"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}): '
        "loading it runs Python code shipped with the checkpoint; set model.trust_remote_code=true only "
        "for a checkpoint whose code you trust"
    )
    with pytest.raises(LLMSourceError) as e:
        check_loadable(str(d), trust_remote_code=False, allow_pickle_weights=False)
    assert str(e.value) == msg
    with pytest.raises(LLMSourceError) as e:
        load_causal_lm(str(d), torch.float32)  # refused before transformers sees the folder
    assert str(e.value) == msg
    with pytest.raises(LLMSourceError) as e:
        load_tokenizer_files(str(d))  # the tokenizer would read config.json's auto_map too
    assert str(e.value) == msg
    # trusted: the check passes and says so (the remote code itself is not run here)
    assert check_loadable(str(d), trust_remote_code=True, allow_pickle_weights=False) == LoadPlan(
        str(d), use_safetensors=True, trust_remote_code=True
    )
    assert not marker.exists()


def test_unknown_model_type_and_tokenizer_auto_map_are_remote_code(tiny_ckpt, tmp_path):
    d = Path(shutil.copytree(tiny_ckpt, tmp_path / "custom"))
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "my_secret_arch"}))
    import transformers

    with pytest.raises(LLMSourceError) as e:
        check_loadable(str(d), False, False)
    assert str(e.value) == (
        f'{d}/config.json has "model_type": "my_secret_arch", which transformers '
        f"{transformers.__version__} does not implement: only the checkpoint's own code could load it; "
        "set model.trust_remote_code=true only for a checkpoint whose code you trust"
    )
    assert check_loadable(str(d), True, False).trust_remote_code

    (d / "config.json").write_text(json.dumps(cfg))
    tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
    tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (d / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    msg = (
        f'{d}/tokenizer_config.json has "auto_map" ({{"AutoTokenizer": ["tokenization_evil.EvilTokenizer", '
        "null]}): loading it runs Python code shipped with the checkpoint; set model.trust_remote_code=true "
        "only for a checkpoint whose code you trust"
    )
    for call in (lambda: check_loadable(str(d), False, False), lambda: load_tokenizer_files(str(d))):
        with pytest.raises(LLMSourceError) as e:
            call()
        assert str(e.value) == msg


def test_plain_checkpoint_loads_without_remote_code_even_when_trusted(tiny_ckpt):
    # trust is only passed to transformers when the checkpoint needs it
    assert check_loadable(tiny_ckpt, trust_remote_code=True, allow_pickle_weights=True) == LoadPlan(
        tiny_ckpt, use_safetensors=True, trust_remote_code=False
    )
    tok = load_tokenizer_files(tiny_ckpt)
    assert tok.backend_tokenizer is not None


def test_slow_tokenizer_is_refused(tiny_ckpt, monkeypatch):
    import transformers

    class SlowTokenizer:  # what a tokenizer without tokenizer.json loads as: no backend_tokenizer
        pass

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(LLMSourceError) as e:
        load_tokenizer_files(tiny_ckpt)
    assert str(e.value) == (
        f"{tiny_ckpt}: the tokenizer loads as SlowTokenizer, not a fast tokenizer; a tokenizer.json is "
        "needed (save one with the fast tokenizer's save_pretrained)"
    )


# -------------------------------------------------------------------------------------- weights
def _pickled_copy(tiny_ckpt: str, dest: Path, state: object) -> Path:
    dest.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_ckpt, name), dest / name)
    torch.save(state, dest / "pytorch_model.bin")
    return dest


def test_pickled_weights_refused_unless_allowed_then_load_equal(tiny_ckpt, tmp_path):
    ref = load_causal_lm(tiny_ckpt, torch.float32)
    d = _pickled_copy(tiny_ckpt, tmp_path / "pickled", ref.state_dict())
    with pytest.raises(LLMSourceError) as e:
        load_causal_lm(str(d), torch.float32)
    assert str(e.value) == (
        f"{d}: the only weights are pickled (pytorch_model.bin), and unpickling can run code; convert "
        "them to safetensors, or set model.allow_pickle_weights=true for a file you trust (it is then "
        "loaded with torch.load(weights_only=True))"
    )
    assert check_loadable(str(d), False, True) == LoadPlan(
        str(d), use_safetensors=False, trust_remote_code=False
    )
    model = load_causal_lm(str(d), torch.float32, allow_pickle_weights=True)
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)


class _WritesMarker:
    """Unpickling this creates `path`: builtins.open(path, "w"), the kind of call a pickle can make."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_weights_load_with_weights_only(tiny_ckpt, tmp_path):
    # control: the payload is live (a full unpickle runs it)
    live = tmp_path / "control-marker"
    torch.save({"w": _WritesMarker(str(live))}, tmp_path / "control.bin")
    torch.load(tmp_path / "control.bin", weights_only=False)
    assert live.exists()

    marker = tmp_path / "marker"
    d = _pickled_copy(tiny_ckpt, tmp_path / "evil", {"model.embed_tokens.weight": _WritesMarker(str(marker))})
    with pytest.raises(LLMSourceError, match="the only weights are pickled"):
        load_causal_lm(str(d), torch.float32)
    with pytest.raises(LLMSourceError) as e:  # allowed: weights_only=True refuses the global
        load_causal_lm(str(d), torch.float32, allow_pickle_weights=True)
    assert isinstance(e.value.__cause__, pickle.UnpicklingError)
    assert str(e.value) == (
        f"{d}: the pickled weights hold more than tensors (they call io.open), which "
        "torch.load(weights_only=True) refuses; convert them to safetensors with a tool you trust"
    )
    assert not marker.exists()


def test_missing_shards_and_no_weights_are_named(tiny_ckpt, tmp_path):
    d = Path(shutil.copytree(tiny_ckpt, tmp_path / "partial"))
    (d / "model-00002-of-00004.safetensors").unlink()
    (d / "model-00004-of-00004.safetensors").unlink()
    with pytest.raises(LLMNotFoundError) as e:
        check_loadable(str(d), False, False)
    assert str(e.value) == (
        f"{d}/model.safetensors.index.json names 2 missing shard(s): model-00002-of-00004.safetensors, "
        "model-00004-of-00004.safetensors; copy the whole checkpoint folder"
    )
    for p in d.glob("model*"):
        p.unlink()
    with pytest.raises(LLMNotFoundError) as e:
        check_loadable(str(d), False, True)
    assert str(e.value) == (
        f"{d}: no model weights (expected model.safetensors, or model.safetensors.index.json and its shards)"
    )
    torch.save({}, d / "consolidated.pth")
    with pytest.raises(LLMNotFoundError) as e:
        check_loadable(str(d), False, True)
    assert str(e.value) == (
        f"{d}: pickled files consolidated.pth but no pytorch_model.bin or pytorch_model.bin.index.json, "
        "the names transformers loads; convert the weights to safetensors"
    )
