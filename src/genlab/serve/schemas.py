"""The explorer's request bodies, one pydantic model per endpoint (``genlab.serve.app``).

Every model forbids unknown fields and non-finite numbers, and bounds every list, so a hostile or mistaken request
is refused in one line before anything is allocated for it. What depends on the run (a code's length, a class index,
a test index, a mask's shape) is checked by the app against the run it names."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_LATENT = 4096  # the longest code a request may carry; the run's own size is checked after
MAX_SIDE = 512  # the largest mask side a request may carry
MAX_SEED = 2**63 - 1
MAX_TEXT = 64  # characters of a line given to text interpolation

Coordinate = Annotated[float, Field(ge=-10.0, le=10.0, allow_inf_nan=False)]
Code = Annotated[list[Coordinate], Field(min_length=1, max_length=MAX_LATENT)]
Index = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Label = Annotated[int, Field(ge=0)]
MIN_TEMPERATURE = 0.01  # below this (but above 0) logits / T overflow; 0 itself means the most likely value


def _usable_temperature(t: float) -> float:
    if 0 < t < MIN_TEMPERATURE:
        raise ValueError(f"a temperature is 0 (the most likely value) or from {MIN_TEMPERATURE} to 5")
    return t


Temperature = Annotated[float, Field(ge=0.0, le=5.0, allow_inf_nan=False), AfterValidator(_usable_temperature)]
Line = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
MaskRow = Annotated[list[Literal[0, 1]], Field(min_length=1, max_length=MAX_SIDE)]


class Request(BaseModel):
    """Base of the bodies: unknown fields are errors, NaN and infinities are refused, ints are not coerced from
    strings or floats (a label of "3" or 2.5 is a mistake worth saying)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class DecodeRequest(Request):
    z: Code
    label: Label | None = None


class DecodeBatchRequest(Request):
    zs: Annotated[list[Code], Field(min_length=1, max_length=64)]
    label: Label | None = None


class EncodeRequest(Request):
    index: Index
    label: Label | None = None


class RandomRequest(Request):
    seed: Seed


class InterpolateRequest(Request):
    a: Index
    b: Index
    steps: Annotated[int, Field(ge=2, le=64)]
    mode: Literal["linear", "spherical"] = "linear"
    label: Label | None = None


class TransferRequest(Request):
    z: Code | None = None
    index: Index | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TransferRequest:
        if (self.z is None) == (self.index is None):
            raise ValueError("give exactly one of z (a code) or index (a test image)")
        return self


class NeighboursRequest(Request):
    index: Index
    k: Annotated[int, Field(ge=1, le=32)] = 8


class SampleRequest(Request):
    n: Annotated[int, Field(ge=1, le=16)] = 1
    seed: Seed = 0
    temperature: Temperature | None = None
    label: Label | None = None


class CompleteRequest(Request):
    index: Index
    hide: Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)] | None = None
    mask: Annotated[list[MaskRow], Field(min_length=1, max_length=MAX_SIDE)] | None = None
    temperature: Temperature | None = None
    seed: Seed = 0
    label: Label | None = None

    @model_validator(mode="after")
    def _one_region(self) -> CompleteRequest:
        if (self.hide is None) == (self.mask is None):
            raise ValueError("give exactly one of hide (a fraction of the rows) or mask (H rows of W 0/1 values)")
        return self


class TextSampleRequest(Request):
    n: Annotated[int, Field(ge=1, le=32)] = 8
    seed: Seed = 0
    temperature: Temperature | None = None


class TextInterpolateRequest(Request):
    first: Line
    last: Line
    steps: Annotated[int, Field(ge=2, le=32)] = 8

    @model_validator(mode="after")
    def _not_blank(self) -> TextInterpolateRequest:
        if not self.first.strip() or not self.last.strip():
            raise ValueError("first and last must each hold a character that is not a space")
        return self
