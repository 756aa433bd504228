"""The ``personalization:`` section of a study: what model each site keeps for itself.

A personalized model is trained at a site from the federated model on the site's own training
rows, kept at the site and never sent anywhere; the site reports only its metrics on its own
test rows, prefixed ``personal_`` (``personal_accuracy``, ``personal_loss`` ...), beside the
global model's. The section is part of the training plan, so a steward approves exactly this
extra training and these extra outputs.

Methods:

``none``
    Nothing personal (the default).
``finetune``
    At the final evaluation each site fine-tunes the final global model on its training rows
    for ``epochs`` passes with the study's local training settings (``lr`` overrides the
    learning rate) and evaluates that model. With ``validation_share`` it stops early, as
    FL4Health checkpoints its personal models: that stratified share of the site's training
    rows is held out, the rest trains one pass at a time for up to ``epochs`` passes, and the
    site keeps the checkpoint with the lowest loss on the held-out rows (checkpoint 0 is the
    global model itself, so a site the fine-tuning does not help keeps the global model).
``ditto``
    Ditto (Li et al., ICML 2021): each site keeps a personal model ``v_k`` across rounds. In
    every training task it also trains ``v_k`` on its rows with the proximal term
    ``lam/2 * ||v_k - w||^2`` towards the round's global model ``w`` (the study's local
    training settings, or ``epochs`` passes when set; ``lr`` overrides the learning rate);
    the update it sends is the normal global one. Every evaluation also evaluates ``v_k``.
``fedbn``
    FedBN (Li et al., ICLR 2021): for torch models with batch-normalization layers, each site
    keeps its own normalization parameters and running statistics and sends no change to
    them, so the aggregate leaves them as they were; a model without such layers is refused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PERSONALIZATION_METHODS", "PersonalizationSpec"]

PERSONALIZATION_METHODS = ("none", "finetune", "ditto", "fedbn")


class PersonalizationSpec(BaseModel):
    """How each site personalizes the federated model (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "finetune", "ditto", "fedbn"] = "none"
    #: ``finetune``: passes over the site's training rows (>= 1; default 1). ``ditto``: passes
    #: per round for ``v_k`` instead of the study's local training schedule (default: that
    #: schedule). Zero epochs is refused: a fine-tuned model that equals the global one is no
    #: personal model.
    epochs: int | None = Field(default=None, ge=1, le=1000)
    #: Learning rate of the personal training (default: the study's ``training.lr``).
    lr: float | None = Field(default=None, gt=0)
    #: ``ditto``: weight of the proximal term towards the global model.
    lam: float = Field(default=0.1, ge=0)
    #: ``finetune``: share of the site's training rows held out to pick the best of the
    #: ``epochs`` passes by their loss (early stopping); ``None``: all rows train, all passes.
    validation_share: float | None = Field(default=None, gt=0, le=0.5)

    @model_validator(mode="after")
    def _validation_share_is_finetunes(self) -> PersonalizationSpec:
        if self.validation_share is not None and self.method != "finetune":
            raise ValueError(
                f"personalization validation_share applies to method 'finetune' only, not "
                f"{self.method!r}"
            )
        return self

    @property
    def active(self) -> bool:
        return self.method != "none"
