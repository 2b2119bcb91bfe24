"""Tiny models of the real families, built from config, for CPU runs and tests.

A tiny model is saved exactly like its hub counterpart: a ``LlavaForConditionalGeneration``
(CLIP vision tower + Llama) or a ``Qwen2VLForConditionalGeneration`` with ``save_pretrained``,
next to a processor with the family's real chat template, a tokenizer of the family's class and
the family's special tokens, so ``AutoProcessor`` and ``AutoModelForImageTextToText`` load it as
they would load ``llava-hf/llava-1.5-7b-hf`` or ``Qwen/Qwen2-VL-7B-Instruct``. Only the sizes and
the vocabulary (trained on the benchmark's text) differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlamaTokenizer, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, Qwen2Tokenizer, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor,
                          Qwen2VLVideoProcessor)

# The chat templates shipped with llava-hf/llava-1.5-7b-hf and Qwen/Qwen2-VL-7B-Instruct.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                           "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                           "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                           "<|image_pad|>", "<|video_pad|>")
# Text the tokenizer must cover besides the benchmark: what the chat templates add.
TEMPLATE_TEXT = ("USER: ASSISTANT: system user assistant You are a helpful assistant.",)


@dataclass(frozen=True)
class TinyArchitecture:
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vocab_size: int = 2048


def llama_tokenizer(corpus: Iterable[str], vocab_size: int) -> LlamaTokenizer:
    """A Llama tokenizer (SentencePiece-style BPE with byte fallback) trained on ``corpus``."""
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    model = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Words are split for training only, so no merge crosses a word boundary; the Llama pipeline
    # used at run time then reproduces the same pieces.
    model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
                                  show_progress=False)
    model.train_from_iterator(corpus, trainer)
    merges = [tuple(pair) for pair in json.loads(model.to_str())["model"]["merges"]]
    tokenizer = LlamaTokenizer(vocab=model.get_vocab(), merges=merges, add_bos_token=True, legacy=False)
    tokenizer.add_tokens(["<image>"], special_tokens=True)  # as llava-hf: id after the text vocabulary
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def qwen2_tokenizer(corpus: Iterable[str], vocab_size: int) -> Qwen2Tokenizer:
    """A Qwen2 tokenizer (byte-level BPE) trained on ``corpus``, with Qwen2-VL's special tokens."""
    tokenizer = Qwen2Tokenizer().train_new_from_iterator(
        corpus, vocab_size=vocab_size, new_special_tokens=list(QWEN2_VL_SPECIAL_TOKENS[1:]))
    tokenizer.eos_token = "<|im_end|>"  # as the Instruct checkpoint: generation stops at end of turn
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def build_tiny_llava(corpus: list[str], arch: TinyArchitecture, seed: int):
    tokenizer = llama_tokenizer(corpus + list(TEMPLATE_TEXT), arch.vocab_size)
    image_processor = CLIPImageProcessor(size={"shortest_edge": arch.image_size},
                                         crop_size={"height": arch.image_size, "width": arch.image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=arch.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=arch.vision_hidden, intermediate_size=4 * arch.vision_hidden,
                                       num_hidden_layers=arch.vision_layers, num_attention_heads=arch.vision_heads,
                                       image_size=arch.image_size, patch_size=arch.patch_size,
                                       projection_dim=arch.vision_hidden),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=arch.text_hidden,
                                intermediate_size=int(2.75 * arch.text_hidden), num_hidden_layers=arch.text_layers,
                                num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_heads,
                                max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        image_token_index=ids("<image>"), image_seq_length=(arch.image_size // arch.patch_size) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config), processor


def build_tiny_qwen2_vl(corpus: list[str], arch: TinyArchitecture, seed: int):
    tokenizer = qwen2_tokenizer(corpus + list(TEMPLATE_TEXT), arch.vocab_size)
    pixels = arch.image_size * arch.image_size
    sizes = dict(min_pixels=pixels, max_pixels=pixels, patch_size=arch.patch_size, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes),
                                 video_processor=Qwen2VLVideoProcessor(**sizes), tokenizer=tokenizer,
                                 chat_template=QWEN2_VL_CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    head_dim = arch.text_hidden // arch.text_heads
    unit = head_dim // 16  # Qwen2-VL splits the rotary half-dimension 2:3:3 over (time, height, width)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=arch.text_hidden,
                         intermediate_size=int(2.75 * arch.text_hidden), num_hidden_layers=arch.text_layers,
                         num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_heads,
                         max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2 * unit, 3 * unit, 3 * unit]},
                         bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=arch.vision_layers, embed_dim=arch.vision_hidden, hidden_size=arch.text_hidden,
                           num_heads=arch.vision_heads, patch_size=arch.patch_size, spatial_merge_size=2,
                           temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(config), processor


BUILDERS = {"llava": build_tiny_llava, "qwen2_vl": build_tiny_qwen2_vl}


def build_tiny(family: str, corpus: list[str], arch: TinyArchitecture, seed: int):
    """A randomly initialised tiny model of ``family`` and its processor."""
    if family not in BUILDERS:
        raise ValueError(f"no tiny builder for model family '{family}' (known: {', '.join(BUILDERS)})")
    model, processor = BUILDERS[family](corpus, arch, seed)
    tokenizer = processor.tokenizer
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor
