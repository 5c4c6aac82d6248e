"""Small random-weight causal LMs of the families platform teams deploy, each with its family's
tokenizer conventions, built locally (no model hub) and saved as ordinary Hugging Face checkpoints.

Why: SELLER must work with any causal LM a team brings, and the families differ in exactly the
places that break a soft-prompt pipeline: whether the tokenizer adds BOS (Llama 3, Llama 2, Mistral,
Gemma do; Qwen does not), whether there is a pad token (Llama 3 and Mistral have none), whether a
standalone encode puts a word marker before the text (SentencePiece-style tokenizers do), whether
unseen characters fall back to bytes, GQA, sliding windows, logit soft-capping, tied embeddings.
A tiny model of each, with a tokenizer trained on a few sentences, exercises all of them in seconds.

Tokenizers, two styles, both trained by `bootstrap.train_bpe` (deterministic merges):

* `byte_level` (GPT-2 / Llama 3 / Qwen): a Split pre-tokenizer with the family's regex, then
  ByteLevel(add_prefix_space=False, use_regex=False); ByteLevel decoder. Any text is representable.
  Family special tokens come after the BPE vocab, as in the published files.
  "Hello world" -> ["Hello", "Ġworld"] (pieces, before merges); " Hello" -> ["ĠHello"]: no prefix rule.
* `sentencepiece` (Llama 2 / Mistral / Gemma): a BPE model over "▁"-marked words with
  `byte_fallback=True` and the 256 `<0x00>`..`<0xFF>` byte tokens in the vocab (a character never
  seen in training becomes its UTF-8 bytes, never `<unk>`); family special tokens first (`<unk>`=0,
  `<s>`=1, `</s>`=2 / `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3), then bytes, then pieces. Merges are
  learned on whitespace-split words, so no merge crosses a "▁" word boundary. Decoder
  Replace("▁", " "), ByteFallback, Fuse (+ Strip(" ", 1, 0) where a prefix is added). Three variants
  of how "▁" gets into the text, as found in published tokenizer.json files:

  - `prefix="first"` (Mistral v0.3-style, transformers' `legacy=False` conversion): no normalizer,
    Metaspace(replacement="▁", prepend_scheme="first", split=False).
    "Hello world" -> "▁Hello▁world"; " Hello" -> "▁Hello" (Metaspace does not prepend a second "▁"
    when the text already starts with one, so a leading space is absorbed: decode gives "Hello").
  - `legacy=True` (most published Llama-2 / Mistral-v0.1 files): normalizer
    Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer.
    "Hello world" -> "▁Hello▁world"; " Hello" -> "▁▁Hello" (two markers: the prefix AND the space).
  - `prefix="none"` (Gemma): normalizer Replace(" ", "▁") only, no pre-tokenizer.
    "Hello world" -> "Hello▁world" (no marker on the first word); " Hello" -> "▁Hello".

  The exact ids depend on the merges learned from the texts; the strings above are what the BPE
  model receives (checked in tests/unit/test_families_zoo.py).

The saved tokenizer_config.json names the generic class, so AutoTokenizer loads tokenizer.json as it
is (except for model_type qwen2, which transformers 5 always loads as Qwen2Tokenizer: the same ids,
ByteLevel trim_offsets on, an empty TemplateProcessing post-processor). Published checkpoints name their family's class; transformers 5 then rebuilds the pipeline its
own way (`published_class=True` reproduces that): LlamaTokenizer turns the legacy normalizer into
Metaspace(prepend_scheme="first") (" Hello" -> "▁Hello"), GemmaTokenizer adds a no-op Split(" ").

Families (`CONVENTIONS`): llama3, qwen2, llama2, mistral, gemma, and demo (bootstrap's tokenizer).
Architectures (`build_model`): llama, qwen2, qwen3, mistral, gemma2, gemma3 (text-only
Gemma3ForCausalLM). `build_family_llm` trains a tokenizer, builds a model and saves both, with
sharded safetensors and an index file, as a published checkpoint is laid out.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from seller_dist.model.bootstrap import SPECIAL_TOKENS, TINY_CORPUS, train_bpe, train_tokenizer
from seller_dist.model.llm import SOFT_TOKEN

# ------------------------------------------------------------------------------------ tokenizers
# Llama 3's split regex (tiktoken cl100k-like: digits in groups of up to 3)
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2's: the same except single digits
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
META = "▁"  # SentencePiece's word marker (U+2581)
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
SP_PREFIXES = ("first", "none")


def _relabel(vocab: dict[str, int], merges: list, head: list[str]) -> dict[str, int]:
    """train_bpe's vocab without bootstrap's own special tokens, after `head` (in that order)."""
    out = {tok: i for i, tok in enumerate(head)}
    for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        if tok not in SPECIAL_TOKENS:
            out.setdefault(tok, len(out))
    for a, b in merges:  # a merge whose product is one of bootstrap's special strings keeps its token
        out.setdefault(a + b, len(out))
    return out


def byte_level_backend(
    texts: Iterable[str],
    vocab_size: int,
    split_regex: str | None = None,
    normalizer_nfc: bool = False,
):
    """A GPT-2 / Llama 3 / Qwen-style byte-level BPE `tokenizers.Tokenizer` (no special tokens yet).
    `split_regex`: a Split(Isolated) pre-tokenizer before ByteLevel(use_regex=False) (Llama 3, Qwen2);
    None: ByteLevel's own GPT-2 regex. `vocab_size` counts the BPE vocab only."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    if split_regex is None:
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        pre = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            ]
        )
    norm = normalizers.NFC() if normalizer_nfc else None
    words: Counter[str] = Counter()
    for text in texts:
        text = norm.normalize_str(text) if norm is not None else text
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    n_special = len(SPECIAL_TOKENS)  # train_bpe counts bootstrap's specials in its vocab size
    vocab, merges = train_bpe(
        dict(sorted(words.items())), vocab_size + n_special, pre_tokenizers.ByteLevel.alphabet()
    )
    tok = Tokenizer(models.BPE(vocab=_relabel(vocab, merges, []), merges=merges))
    if norm is not None:
        tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    return tok


def sentencepiece_backend(
    texts: Iterable[str],
    vocab_size: int,
    head_tokens: list[str],
    unk_token: str = "<unk>",
    *,
    legacy: bool = False,
    prefix: str = "first",
):
    """A Llama 2 / Mistral / Gemma-style BPE `tokenizers.Tokenizer` with byte fallback: `head_tokens`
    (the family's special tokens, ids 0..) then the 256 byte tokens then the learned pieces; the whole
    model vocab is about `vocab_size` (at least the bytes + the characters of `texts`).

    prefix="first": Metaspace(prepend_scheme="first", split=False) pre-tokenizer, no normalizer;
    legacy=True (with prefix="first"): normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no
    pre-tokenizer; prefix="none" (Gemma): normalizer Replace(" ", "▁"), no pre-tokenizer, no Strip
    in the decoder. See the module docstring for what each does with "Hello world" and " Hello"."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    if prefix not in SP_PREFIXES:
        raise ValueError(f"prefix={prefix!r}: expected one of {SP_PREFIXES}")
    if legacy and prefix != "first":
        raise ValueError("legacy=True is the Prepend('▁') normalizer: it needs prefix='first'")
    if unk_token not in head_tokens:
        raise ValueError(f"unk_token {unk_token!r} must be one of head_tokens {head_tokens}")
    # training words: each starts at a "▁" (the text's first only with a prefix), as SentencePiece
    # splits on whitespace; merges therefore never cross a word boundary
    splitter = pre_tokenizers.Metaspace(
        replacement=META, prepend_scheme="first" if prefix == "first" else "never", split=True
    )
    words: Counter[str] = Counter()
    chars: set[str] = {META}
    for text in texts:
        pieces = [w for w, _ in splitter.pre_tokenize_str(text)]
        words.update(pieces)
        chars.update(*pieces)
    head = list(head_tokens) + [b for b in BYTE_TOKENS if b not in head_tokens]
    n_special = len(SPECIAL_TOKENS)
    vocab, merges = train_bpe(dict(sorted(words.items())), vocab_size - len(head) + n_special, sorted(chars))
    tok = Tokenizer(
        models.BPE(
            vocab=_relabel(vocab, merges, head),
            merges=merges,
            unk_token=unk_token,
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(META), normalizers.Replace(" ", META)])
    elif prefix == "none":
        tok.normalizer = normalizers.Replace(" ", META)
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="first", split=False)
    steps = [decoders.Replace(META, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix == "first":
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


# ------------------------------------------------------------------------------------ conventions
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_TEMPLATE = (  # Qwen2-Instruct's
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
MISTRAL_CHAT_TEMPLATE = (  # Mistral-7B-Instruct-v0.1's
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

_LLAMA3_SPECIALS = [  # Llama 3.1's first ids after the BPE vocab (128000..), then a few reserved
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",  # named "pad" but NOT the tokenizer's pad token (there is none)
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|reserved_special_token_3|>",
    "<|reserved_special_token_4|>",
]


@dataclass(frozen=True)
class Convention:
    """A model family's tokenizer conventions (and the special-token ids its config.json names)."""

    name: str
    style: str  # "byte_level" | "sentencepiece"
    special_tokens: tuple[str, ...]  # family special tokens, in id order
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None = None
    add_bos: bool = False  # a TemplateProcessing post-processor puts `bos` before every encode
    split_regex: str | None = None  # byte_level: Split pre-tokenizer regex (None: GPT-2's)
    nfc: bool = False  # byte_level: NFC normalizer (Qwen2)
    legacy: bool = False  # sentencepiece: Prepend("▁") + Replace normalizer instead of Metaspace
    prefix: str = "first"  # sentencepiece: "first" (a "▁" before the text) or "none" (Gemma)
    chat_template: str | None = None
    chat_markers: tuple[str, ...] = ()  # strings a rendered chat holds
    # tokenizer_config.json's tokenizer_class in the published checkpoints. NOT written by default:
    # transformers 5 then rebuilds the pipeline its own way instead of loading tokenizer.json as is
    # (LlamaTokenizer turns the legacy Prepend/Replace normalizer into a Metaspace pre-tokenizer)
    published_tokenizer_class: str | None = None
    # config.json: eos may be several ids; bos/pad there as the published configs have them
    config_eos: tuple[str, ...] = ()
    config_bos: str | None = None
    config_pad: str | None = None


LLAMA2 = Convention(
    name="llama2",
    style="sentencepiece",
    special_tokens=("<unk>", "<s>", "</s>"),
    bos="<s>",
    eos="</s>",
    pad=None,
    unk="<unk>",
    add_bos=True,
    legacy=True,
    chat_template=LLAMA2_CHAT_TEMPLATE,
    chat_markers=("<s>", "[INST]", "[/INST]", "</s>"),
    published_tokenizer_class="LlamaTokenizer",
    config_eos=("</s>",),
    config_bos="<s>",
)

CONVENTIONS: dict[str, Convention] = {
    "llama3": Convention(
        name="llama3",
        style="byte_level",
        special_tokens=tuple(_LLAMA3_SPECIALS),
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad=None,
        add_bos=True,
        split_regex=LLAMA3_SPLIT_REGEX,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        chat_markers=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        published_tokenizer_class="PreTrainedTokenizerFast",
        config_eos=("<|end_of_text|>", "<|eot_id|>"),
        config_bos="<|begin_of_text|>",
    ),
    "qwen2": Convention(
        name="qwen2",
        style="byte_level",
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None,
        eos="<|endoftext|>",  # a base model's; the Instruct tokenizer's eos is <|im_end|>
        pad="<|endoftext|>",
        add_bos=False,
        split_regex=QWEN2_SPLIT_REGEX,
        nfc=True,
        chat_template=CHATML_TEMPLATE,
        chat_markers=("<|im_start|>", "<|im_end|>"),
        published_tokenizer_class="Qwen2Tokenizer",
        config_eos=("<|endoftext|>",),
        config_bos="<|endoftext|>",  # Qwen2 configs name bos_token_id although the tokenizer adds none
    ),
    "llama2": LLAMA2,
    # Mistral's tokenizer.json: Metaspace (prepend_scheme "first") where Llama 2's has the legacy
    # Prepend normalizer; tokens, BOS/EOS and chat markers as Llama 2's
    "mistral": dataclasses.replace(LLAMA2, name="mistral", legacy=False, chat_template=MISTRAL_CHAT_TEMPLATE),
    "gemma": Convention(
        name="gemma",
        style="sentencepiece",
        special_tokens=(
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<mask>",
            "<unused0>",
            "<unused1>",
            "<start_of_turn>",
            "<end_of_turn>",
        ),
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
        prefix="none",
        chat_template=GEMMA_CHAT_TEMPLATE,
        chat_markers=("<bos>", "<start_of_turn>user", "<start_of_turn>model", "<end_of_turn>"),
        published_tokenizer_class="GemmaTokenizer",
        config_eos=("<eos>",),
        config_bos="<bos>",
        config_pad="<pad>",
    ),
    "demo": Convention(  # bootstrap.train_tokenizer: what `seller-dist bootstrap-llm` trains today
        name="demo",
        style="byte_level",
        special_tokens=tuple(SPECIAL_TOKENS),
        bos="<|bos|>",
        eos="<|eos|>",
        pad="<|pad|>",
        add_bos=True,
        config_eos=("<|eos|>",),
        config_bos="<|bos|>",
        config_pad="<|pad|>",
    ),
}

# convention -> tokenizer style
TOKENIZER_STYLES = {name: c.style for name, c in CONVENTIONS.items()}
DEFAULT_CONVENTION = {
    "llama": "llama3",
    "qwen2": "qwen2",
    "qwen3": "qwen2",
    "mistral": "mistral",
    "gemma2": "gemma",
    "gemma3": "gemma",
}
ARCHS = tuple(DEFAULT_CONVENTION)
TIED_BY_DEFAULT = {
    "llama": False,
    "qwen2": True,
    "qwen3": True,
    "mistral": False,
    "gemma2": True,
    "gemma3": True,
}

# (arch, convention): every arch, both tokenizer styles, every SentencePiece variant
FAMILY_MATRIX: list[tuple[str, str]] = [
    ("llama", "llama3"),
    ("llama", "llama2"),  # Llama 2: the llama arch with a legacy SentencePiece-style tokenizer
    ("llama", "demo"),
    ("qwen2", "qwen2"),
    ("qwen3", "qwen2"),
    ("mistral", "mistral"),
    ("gemma2", "gemma"),
    ("gemma3", "gemma"),
]


def build_tokenizer(convention: str, texts: list[str] | None = None, vocab_size: int = 400):
    """A `transformers.PreTrainedTokenizerFast` with `convention`'s special tokens, BOS rule and chat
    template, trained on `texts` (default TINY_CORPUS * 4); SOFT_TOKEN is an additional special
    token (the last id). Deterministic: the same texts give the same tokenizer.json."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if convention not in CONVENTIONS:
        raise ValueError(f"tokenizer convention {convention!r}: expected one of {sorted(CONVENTIONS)}")
    conv = CONVENTIONS[convention]
    texts = list(TINY_CORPUS * 4 if texts is None else texts)
    if convention == "demo":
        return train_tokenizer(texts, vocab_size)
    if conv.style == "byte_level":
        tok = byte_level_backend(texts, vocab_size, conv.split_regex, conv.nfc)
        tok.add_special_tokens(list(conv.special_tokens))  # after the BPE vocab, as published
    else:
        tok = sentencepiece_backend(
            texts,
            vocab_size,
            list(conv.special_tokens),
            conv.unk or "<unk>",
            legacy=conv.legacy,
            prefix=conv.prefix,
        )
        tok.add_special_tokens(list(conv.special_tokens))  # already in the vocab: same ids, now special
    tok.add_special_tokens([SOFT_TOKEN])
    if conv.add_bos:
        bos = conv.bos
        template = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, tok.token_to_id(bos))],
        )
        if conv.style == "byte_level":  # Llama 3's: ByteLevel offsets, then the template
            template = processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
        tok.post_processor = template
    kwargs = {
        "tokenizer_object": tok,
        "bos_token": conv.bos,
        "eos_token": conv.eos,
        "pad_token": conv.pad,
        "unk_token": conv.unk,
        "additional_special_tokens": [SOFT_TOKEN],
        # Meta's Llama 3 file says True; transformers 5 ignores it for BPE (with a warning)
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
    }
    if conv.chat_template is not None:
        kwargs["chat_template"] = conv.chat_template
    return PreTrainedTokenizerFast(**{k: v for k, v in kwargs.items() if v is not None})


# ------------------------------------------------------------------------------------ models
def _ids(tokenizer, tokens: Iterable[str]) -> list[int]:
    out = []
    for t in tokens:
        i = tokenizer.convert_tokens_to_ids(t)
        if i is None or (t != tokenizer.unk_token and i == tokenizer.unk_token_id):
            raise ValueError(f"{t!r} is not in the tokenizer")
        out.append(int(i))
    return out


def build_model(
    arch: str,
    tokenizer,
    convention: str,
    *,
    tied: bool | None = None,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    sliding_window: int = 32,
    max_positions: int = 512,
    init_std: float = 0.02,
):
    """A random-weight `arch` causal LM (eval mode) sized for tests: `layers` layers, GQA with
    `kv_heads` < `heads` key/value heads, head_dim hidden // heads. Per family: qwen2 has q/k/v
    biases (built in), qwen3 q/k norms; mistral, gemma2 and gemma3 a small `sliding_window`, gemma2
    its attention/final logit soft-capping defaults and alternating sliding/full layers, gemma3 one
    sliding then one full layer (its 5:1 pattern cut to 2 layers). Vocab size = len(tokenizer);
    bos/eos/pad ids from `convention` as the published config.json files name them (llama3: no pad,
    eos [<|end_of_text|>, <|eot_id|>]; qwen2: bos_token_id = <|endoftext|>). `tied` defaults to the
    family's (qwen2/qwen3/gemma*: tied; llama/mistral: untied). `init_std` is the initializer range:
    at 0.02 tied random logits are nearly flat."""
    import transformers

    if arch not in TIED_BY_DEFAULT:
        raise ValueError(f"arch {arch!r}: expected one of {ARCHS}")
    if hidden % heads or heads % kv_heads:
        raise ValueError(
            f"hidden={hidden}, heads={heads}, kv_heads={kv_heads}: need heads | hidden, kv | heads"
        )
    conv = CONVENTIONS[convention]
    eos = _ids(tokenizer, conv.config_eos)
    head_dim = hidden // heads
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": max_positions,
        "initializer_range": init_std,
        "tie_word_embeddings": TIED_BY_DEFAULT[arch] if tied is None else tied,
        "bos_token_id": _ids(tokenizer, [conv.config_bos])[0] if conv.config_bos else None,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
        "pad_token_id": _ids(tokenizer, [conv.config_pad])[0] if conv.config_pad else None,
    }
    if arch == "llama":
        cfg_cls, model_cls, extra = transformers.LlamaConfig, transformers.LlamaForCausalLM, {}
    elif arch == "qwen2":
        cfg_cls, model_cls, extra = transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}
    elif arch == "qwen3":
        cfg_cls, model_cls, extra = transformers.Qwen3Config, transformers.Qwen3ForCausalLM, {}
    elif arch == "mistral":
        cfg_cls, model_cls = transformers.MistralConfig, transformers.MistralForCausalLM
        extra = {"sliding_window": sliding_window}
    elif arch == "gemma2":
        cfg_cls, model_cls = transformers.Gemma2Config, transformers.Gemma2ForCausalLM
        extra = {
            "sliding_window": sliding_window,
            "query_pre_attn_scalar": head_dim,
            "layer_types": [("sliding_attention", "full_attention")[i % 2] for i in range(layers)],
        }
    else:  # gemma3, text only
        cfg_cls, model_cls = transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM
        extra = {
            "sliding_window": sliding_window,
            "query_pre_attn_scalar": head_dim,
            # Gemma 3's 5 sliding : 1 full, cut so a 2-layer model has both kinds
            "layer_types": [("sliding_attention", "full_attention")[i % 2] for i in range(layers)],
        }
    cfg = cfg_cls(**common, **extra)
    torch.manual_seed(seed)
    model = model_cls(cfg)
    return model.eval()


def save_family_checkpoint(
    model, tokenizer, out_dir: str | Path, max_shard_size: str = "50KB", tokenizer_class: str | None = None
) -> str:
    """`save_pretrained` of both, the weights as sharded safetensors + model.safetensors.index.json;
    the tokenizer.json without padding/truncation. `tokenizer_class`: written into
    tokenizer_config.json in place of the generic class (see Convention.published_tokenizer_class)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    tokenizer.save_pretrained(str(out))
    if tokenizer_class is not None:
        path = out / "tokenizer_config.json"
        cfg = json.loads(path.read_text())
        cfg["tokenizer_class"] = tokenizer_class
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    index = out / "model.safetensors.index.json"
    if index.exists():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        missing = sorted(s for s in shards if not (out / s).exists())
        if missing:
            raise RuntimeError(f"{out}: shards named in the index are missing: {missing}")
    return str(out)


def build_family_llm(
    out_dir: str | Path,
    arch: str,
    tokenizer_style: str | None = None,
    *,
    tied: bool | None = None,
    seed: int = 0,
    texts: list[str] | None = None,
    vocab_size: int = 400,
    max_shard_size: str = "50KB",
    init_std: float = 0.02,
    published_class: bool = False,
) -> str:
    """Train `tokenizer_style`'s tokenizer (a CONVENTIONS name; default per arch: llama->llama3,
    qwen2/qwen3->qwen2, mistral->mistral, gemma2/gemma3->gemma) on `texts` (default TINY_CORPUS * 4),
    build a random `arch` model with `seed`, save both to `out_dir` (sharded safetensors + index).
    Returns the directory. The same arguments give a byte-identical tokenizer.json and equal weights.

    The saved tokenizer_config.json names the generic class, so AutoTokenizer loads tokenizer.json as
    it is; `published_class=True` names the family's class instead (LlamaTokenizer, GemmaTokenizer,
    ...), as the published checkpoints do, to reproduce how transformers 5 loads those (it rebuilds
    the pre-tokenizer/normalizer: a legacy Llama-2 file loads as Metaspace(prepend_scheme="first"))."""
    if arch not in DEFAULT_CONVENTION:
        raise ValueError(f"arch {arch!r}: expected one of {ARCHS}")
    convention = tokenizer_style or DEFAULT_CONVENTION[arch]
    tok = build_tokenizer(convention, texts, vocab_size)
    model = build_model(arch, tok, convention, tied=tied, seed=seed, init_std=init_std)
    cls = CONVENTIONS[convention].published_tokenizer_class if published_class else None
    return save_family_checkpoint(model, tok, out_dir, max_shard_size, tokenizer_class=cls)
