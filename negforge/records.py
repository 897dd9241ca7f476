"""The query record every reader produces and every stage consumes."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

#: How far a window's end may run past the video's duration, in seconds. The published
#: Charades-STA / Charades-CG annotations overhang by up to 1.54 s (1,790 of 27,089 rows).
WINDOW_END_TOLERANCE_S = 2.0
#: The longest query accepted, in characters. Grounding queries are one sentence (the
#: longest of Charades-CG / ActivityNet-CG has a few hundred characters); spaCy's parser
#: needs about 1 GB per 100,000 characters, so this bound keeps a hostile row at ~100 MB.
MAX_QUERY_CHARS = 10_000


class QueryRecord(BaseModel):
    """One (video, query) pair in the Moment-DETR / SHINE jsonl vocabulary."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    qid: str = Field(min_length=1)
    query: str
    vid: str = Field(min_length=1)
    duration: float = Field(gt=0, allow_inf_nan=False)
    relevant_windows: list[tuple[FiniteFloat, FiniteFloat]] = Field(min_length=1)
    masked_queries: list[str] | None = None
    recomposed_queries: list[str] | None = None
    #: Composition type(s) of a novel-composition sentence, e.g. {"v-n": [["take", "fridge"]]}.
    novels: dict[str, list[list[str]]] | None = None
    #: QVHighlights: the 2-second clips inside the windows and their three annotators'
    #: saliency scores (0-4), one row per clip.
    relevant_clip_ids: list[int] | None = None
    saliency_scores: list[list[float]] | None = None
    _numeric_qid: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_numeric_qid(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        record = handler(data)
        if isinstance(data, dict):
            qid = data.get("qid")
            record._numeric_qid = isinstance(qid, int) and not isinstance(qid, bool)
        return record

    @field_validator("relevant_clip_ids")
    @classmethod
    def _clip_ids_not_negative(cls, ids: list[int] | None) -> list[int] | None:
        if ids is not None and any(c < 0 for c in ids):
            raise ValueError("relevant_clip_ids must be >= 0")
        return ids

    @field_validator("saliency_scores")
    @classmethod
    def _one_score_row_per_clip(
        cls, scores: list[list[float]] | None, info: ValidationInfo
    ) -> list[list[float]] | None:
        ids = info.data.get("relevant_clip_ids")
        if scores is not None and (ids is None or len(ids) != len(scores)):
            count = "no" if ids is None else len(ids)
            raise ValueError(f"{len(scores)} score rows but {count} relevant_clip_ids")
        return scores

    @property
    def numeric_qid(self) -> bool:
        """Whether the file gave the qid as a number (QVHighlights); written back as one."""
        return self._numeric_qid

    def __eq__(self, other: object) -> bool:
        # Records are equal when their fields are: how a file spelled the qid is not part of
        # the record's value (a jsonl with 7 and a csv with "7" hold the same query).
        if not isinstance(other, QueryRecord):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @field_validator("qid", mode="before")
    @classmethod
    def _qid_as_text(cls, value: object) -> object:
        # QVHighlights numbers its queries; everything downstream keys on text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is empty")
        if len(value) > MAX_QUERY_CHARS:
            raise ValueError(
                f"query is {len(value):,} characters long; the limit is {MAX_QUERY_CHARS:,} "
                "(one sentence is expected; spaCy's memory grows with the text)"
            )
        return value

    @field_validator("relevant_windows")
    @classmethod
    def _windows_inside_video(
        cls, windows: list[tuple[float, float]], info: ValidationInfo
    ) -> list[tuple[float, float]]:
        duration = info.data.get("duration")
        for start, end in windows:
            if start < 0 or end <= start:
                raise ValueError(f"window [{start}, {end}] is not 0 <= start < end")
            if duration is not None and (
                start >= duration or end > duration + WINDOW_END_TOLERANCE_S
            ):
                raise ValueError(
                    f"window [{start}, {end}] lies outside the video's duration {duration}"
                )
        return windows

    @property
    def novel_types(self) -> list[str]:
        """Composition types of this query ([] when the split has no ``novels``)."""
        return sorted(self.novels) if self.novels else []
