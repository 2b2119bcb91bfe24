"""What differs between the model families we support, in one place.

Everything else (loading, prompting, training, Fisher, masks) is written once against the
``Family`` interface. Parameter names are those of transformers 5.x, where both families keep the
vision tower, the connector and the language model under ``model.`` and the output head at
``lm_head``.
"""

from __future__ import annotations

from dataclasses import dataclass

MODULE_GROUPS = ("language", "vision", "all")
PARTS = ("vision", "connector", "language")  # what ``Family.module_of`` returns


def parts_reached(images: bool) -> tuple[str, ...]:
    """The parts of the model an example's loss depends on. With an image, every part; without
    one, only the language model: the vision tower and the connector never run, so a text-only
    example's gradient there is not small but absent (identically zero), in both families."""
    return PARTS if images else ("language",)


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str  # ``config.model_type`` of the checkpoints of this family
    vision_prefixes: tuple[str, ...]
    connector_prefixes: tuple[str, ...]
    language_prefixes: tuple[str, ...]
    decoder_layers: str  # the language model's decoder layers (a ModuleList), as a module path

    def decoder_layer(self, model, index: int):
        """The language model's decoder layer ``index`` (0 = the first), refused with the range
        when the model has no such layer."""
        layers = model.get_submodule(self.decoder_layers)
        if not 0 <= index < len(layers):
            raise ValueError(f"decoder layer {index} does not exist: the {self.name} model's language model has "
                             f"{len(layers)} (0-{len(layers) - 1})")
        return layers[index]

    def module_of(self, parameter_name: str) -> str:
        """``vision``, ``connector`` or ``language``: where a parameter sits in the model."""
        # The connector is tested first: Qwen2-VL nests its merger inside the vision tower.
        for part, prefixes in (("connector", self.connector_prefixes), ("vision", self.vision_prefixes),
                               ("language", self.language_prefixes)):
            if parameter_name.startswith(prefixes):
                return part
        raise ValueError(f"parameter '{parameter_name}' belongs to no known part of a {self.name} model")

    def in_group(self, parameter_name: str, group: str) -> bool:
        """Module groups of the paper's Table 2: LM + connector, vision encoder, or all."""
        part = self.module_of(parameter_name)
        if group == "all":
            return True
        if group == "language":
            return part in ("language", "connector")
        if group == "vision":
            return part == "vision"
        raise ValueError(f"unknown module group '{group}' (known: {', '.join(MODULE_GROUPS)})")


FAMILIES = {
    "llava": Family("llava", "llava", ("model.vision_tower.",), ("model.multi_modal_projector.",),
                    ("model.language_model.", "lm_head."), "model.language_model.layers"),
    "qwen2_vl": Family("qwen2_vl", "qwen2_vl", ("model.visual.",), ("model.visual.merger.",),
                       ("model.language_model.", "lm_head."), "model.language_model.layers"),
}


def family_of(model_type: str) -> Family:
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(f"model type '{model_type}' is not supported (supported: {', '.join(FAMILIES)})")
