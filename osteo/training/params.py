"""What a training is asked for: one typed object that `osteo train` builds (its options are made from the
fields) and flows/train.py takes.

A pydantic model so that Prefect validates it (a flow run, or a deployment's parameters) and shows each
field with its description in its UI; frozen, and an unknown field is refused, not ignored. The choices
are osteo_model.config's (a test keeps them equal); None means the preset's value, or the setting's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from osteo_model.config import TrainConfig, get_preset

Preset = Literal["demo", "paper"]
Arch = Literal["resnet18", "resnet34", "googlenet", "densenet121", "vgg16"]
SelectBy = Literal["val_loss", "val_recall", "val_auc"]
Augment = Literal["offline", "online", "none"]
BoxSource = Literal["human", "any"]
Clinical = Literal["age", "sex", "bmi"]
Device = Literal["auto", "cpu", "cuda"]
Amp = Literal["auto", "off", "bf16", "fp16"]
ChannelsLast = Literal["auto", "on", "off"]


class TrainParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: Preset = Field(default="demo", description="demo: small and fast on a CPU; paper: the seed study's "
                                                       "recipe")
    arch: Arch | None = Field(default=None, description="network, trained from scratch unless pretrained weights "
                                                        "are given (none: the preset's)")
    folds: int | None = Field(default=None, description="cross-validation folds, stratified and grouped by "
                                                        "patient; each class needs that many patients (none: the "
                                                        "preset's)")
    epochs: int | None = Field(default=None, description="epochs per fold (none: the preset's)")
    test_year: int | None = Field(default=None, description="held-out year whose left-femur images are the test "
                                                            "set; training uses the years before it (none: "
                                                            "OSTEO_TEST_YEAR)")
    select_by: SelectBy | None = Field(default=None, description="rule for the best epoch and the best fold (none: "
                                                                 "the preset's)")
    pretrained_weights: str | None = Field(default=None, description="a local torchvision state dict of the arch to "
                                                                     "start from; nothing is downloaded (none: random "
                                                                     "weights)")
    augment: Augment | None = Field(default=None, description="offline: one recorded copy per training image; "
                                                              "online: new draws every epoch; none (none: the "
                                                              "preset's)")
    seed: int = Field(default=0, description="seed of folds, augmentation and weights")
    box_source: BoxSource = Field(default="human", description="crops a training may use: human, from a person's "
                                                               "boxes only; any, the localiser's confident boxes too")
    register_version: bool = Field(default=True, description="register the best fold in the MLflow registry as "
                                                             "challenger (champion when it beats the champion on at "
                                                             "least OSTEO_MIN_TEST_IMAGES test images); the same "
                                                             "configuration on the same snapshot is never registered "
                                                             "twice")
    target_recall: float | None = Field(default=None, gt=0, le=1,
                                        description="osteoporosis recall the operating threshold aims at (none: "
                                                    "OSTEO_TARGET_RECALL)")
    heads: bool = Field(default=False, description="also fit the optional heads on the best fold's frozen features: "
                                                   "femoral-neck BMD and T-score regression, normal/osteopenia/"
                                                   "osteoporosis; the classifier is unchanged")
    clinical: tuple[Clinical, ...] = Field(default=(), description="clinical variables fused with the image logit, "
                                                                   "the test-year AUC reported with and without them "
                                                                   "(bmi needs height and weight, which the DEXA "
                                                                   "exports do not carry)")
    device: Device = Field(default="auto", description="where the folds train: auto, CUDA when torch sees one, else "
                                                       "the CPU")
    amp: Amp = Field(default="auto", description="mixed precision: auto, measured on CUDA, off on the CPU; fp16 "
                                                 "needs CUDA")
    channels_last: ChannelsLast = Field(default="auto", description="channels-last memory format: auto, measured "
                                                                    "with amp on CUDA, off on the CPU")

    def config(self) -> TrainConfig:
        """The preset with this training's choices over it (a None keeps the preset's)."""
        chosen = {"arch": self.arch, "folds": self.folds, "epochs": self.epochs, "select_by": self.select_by,
                  "pretrained_weights": self.pretrained_weights, "augment": self.augment, "seed": self.seed}
        return get_preset(self.preset, **{k: v for k, v in chosen.items() if v is not None}, device=self.device,
                          amp=self.amp, channels_last=self.channels_last)
