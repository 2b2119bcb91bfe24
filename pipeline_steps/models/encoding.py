"""Turning (image, question, answer) into model inputs, the same way in every stage.

Prompts are rendered with the processor's own chat template, so a real checkpoint is prompted
exactly as its authors prompt it. Training, Fisher, unlearning and likelihood scoring all score
the *answer continuation*: the tokens the assistant turn adds after the prompt, ending with the
token that closes the turn (``</s>`` for LLaVA, ``<|im_end|>`` for Qwen2-VL). Labels are -100 on
the prompt, so every loss in the project is an answer-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

IGNORE_INDEX = -100
_SENTINEL = "\u2063ANSWER\u2063"
# Per-token sequence fields a processor may return, with their padding values.
_SEQUENCE_PADDING = {"input_ids": None, "attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
LETTERS = ("A", "B", "C", "D", "E", "F")
MULTIPLE_CHOICE_INSTRUCTION = "Just give ONE letter representing the answer directly."


def multiple_choice_question(question: str, options: dict[str, str]) -> str:
    """MLLMU-Bench's multiple-choice prompt: the question, one option per line, the instruction."""
    lines = [question] + [f"{letter}: {text}" for letter, text in options.items()]
    return "\n".join(lines + [MULTIPLE_CHOICE_INSTRUCTION])


@dataclass(frozen=True)
class Example:
    question: str
    answer: str | None = None
    image: Image.Image | None = None


class PromptEncoder:
    """Renders and tokenizes examples for one processor."""

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has no pad token; set one before encoding batches")
        self._answer_prefix, self._answer_suffix = self._answer_frame()

    def _messages(self, question: str, with_image: bool, answer: str | None = None) -> list[dict]:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return messages

    def prompt_text(self, question: str, with_image: bool) -> str:
        return self.processor.apply_chat_template(self._messages(question, with_image), add_generation_prompt=True)

    def _answer_frame(self) -> tuple[str, str]:
        """What the chat template puts before and after an assistant answer."""
        prompt = self.prompt_text("q", with_image=False)
        full = self.processor.apply_chat_template(self._messages("q", False, _SENTINEL))
        if not full.startswith(prompt) or _SENTINEL not in full:
            raise ValueError("the chat template does not render an assistant turn after the generation prompt")
        prefix, suffix = full[len(prompt):].split(_SENTINEL)
        suffix = suffix.rstrip()
        eos = self.tokenizer.eos_token
        if eos not in prefix + suffix:
            suffix += eos  # LLaVA's template closes no turn; its training data ends answers with </s>
        return prefix, suffix

    def continuation_text(self, answer: str) -> str:
        return self._answer_prefix + answer + self._answer_suffix

    def continuation_ids(self, answer: str) -> torch.Tensor:
        """The answer continuation's token ids, exactly as ``encode`` appends them to the prompt
        (tokenized on their own, so a prompt can be encoded once and scored with many answers)."""
        return torch.tensor(self.tokenizer(self.continuation_text(answer), add_special_tokens=False)["input_ids"],
                            dtype=torch.long)

    @staticmethod
    def is_sequence_field(key: str) -> bool:
        """Whether ``key`` is a per-token field (padded by ``collate``) rather than an image field."""
        return key in _SEQUENCE_PADDING

    def encode(self, example: Example) -> dict[str, torch.Tensor]:
        """One example as tensors: sequence fields are 1-D, image fields keep their leading dim."""
        prompt = self.prompt_text(example.question, example.image is not None)
        images = [example.image] if example.image is not None else None
        inputs = self.processor(text=[prompt], images=images, return_tensors="pt")
        encoded = {key: value[0] if key in _SEQUENCE_PADDING else value for key, value in inputs.items()}
        if example.answer is None:
            return encoded
        answer_ids = self.continuation_ids(example.answer)
        prompt_length = encoded["input_ids"].shape[0]
        encoded["input_ids"] = torch.cat([encoded["input_ids"], answer_ids])
        encoded["attention_mask"] = torch.ones_like(encoded["input_ids"])
        encoded["labels"] = torch.cat([torch.full((prompt_length,), IGNORE_INDEX), answer_ids])
        if "mm_token_type_ids" in encoded:  # answer tokens are text
            encoded["mm_token_type_ids"] = torch.cat([encoded["mm_token_type_ids"],
                                                      torch.zeros_like(answer_ids)])
        return encoded

    def collate(self, encoded: list[dict[str, torch.Tensor]], padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Pad sequence fields to one length and concatenate image fields, as the processor would.

        Left padding (the default) puts every answer at the end of its row, which generation needs
        and ``training.losses.answer_logits`` relies on.
        """
        length = max(item["input_ids"].shape[0] for item in encoded)
        batch: dict[str, torch.Tensor] = {}
        sequence_keys = {key for item in encoded for key in item if key in _SEQUENCE_PADDING}
        for key in sequence_keys:
            fill = self.pad_id if key == "input_ids" else _SEQUENCE_PADDING[key]
            rows = []
            for item in encoded:
                values = item.get(key)
                if values is None:  # e.g. mm_token_type_ids of a text-only example: all text
                    values = torch.zeros_like(item["input_ids"])
                pad = torch.full((length - values.shape[0],), fill, dtype=values.dtype)
                rows.append(torch.cat([values, pad] if padding_side == "right" else [pad, values]))
            batch[key] = torch.stack(rows)
        for key in {key for item in encoded for key in item if key not in _SEQUENCE_PADDING}:
            batch[key] = torch.cat([item[key] for item in encoded if key in item])
        return batch
