"""`datasets`: instruction and chat datasets the user brings, beside what scrape and synthesize make. Each
entry names one source (a hub dataset, local files, or a `save_to_disk` folder), the format its records
are in (tasks/common/record_formats.py `FORMATS`) and how much of it goes into the mix."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from pipeline_config.schema.base import Section, one_of
from tasks.common.record_formats import FORMATS

NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


class DatasetSource(Section):
    name: str  # how its rows are known: source `dataset:<name>`, ids `<name>:<record>`
    # where the records are: exactly one of these three
    hub: str | None = None  # a hub dataset id, read through `datasets` (offline: from the local cache)
    files: list[str] = []  # local .jsonl / .json / .parquet / .csv files or globs
    disk: str | None = None  # a folder written by datasets' save_to_disk
    subset: str | None = None  # hub: the dataset's config name
    split: str = "train"  # hub and disk: the split to read
    revision: str | None = None  # hub: a branch, tag or commit (None: main)
    format: str = "alpaca"
    columns: dict[str, str] = {}  # a format's field -> this dataset's column (defaults: the format's names)
    group_by: str | None = None  # a column whose rows are held out together (default: each row alone)
    # the mix: a seeded sample of this fraction of its readable records, then at most max_rows of them
    fraction: float = Field(1.0, gt=0.0, le=1.0)
    max_rows: int | None = Field(None, gt=0)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(f"{value!r}: a name of letters, digits, '_', '-' and '.' (it goes into row ids)")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        return one_of(value, FORMATS, "datasets[].format", "a dataset format")

    @model_validator(mode="after")
    def _one_place(self) -> DatasetSource:
        given = [key for key in ("hub", "files", "disk") if getattr(self, key)]
        if len(given) != 1:
            found = f"{' and '.join(given)} are both given" if given else "none is given"
            raise ValueError(f"dataset {self.name!r}: give exactly one of hub, files or disk ({found})")
        if self.hub is None and (self.subset or self.revision):
            raise ValueError(f"dataset {self.name!r}: subset and revision are for a hub dataset")
        fields = FORMATS[self.format].columns
        if unknown := sorted(set(self.columns) - set(fields)):
            raise ValueError(
                f"dataset {self.name!r}: columns {', '.join(map(repr, unknown))} are not fields of the "
                f"{self.format!r} format; its fields: {', '.join(fields)}"
            )
        return self

    def column_names(self) -> dict[str, str]:
        """Every field of the format -> the column it is read from."""
        return {**FORMATS[self.format].columns, **self.columns}


def check_unique_names(sources: list[DatasetSource]) -> list[DatasetSource]:
    names = [s.name for s in sources]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"datasets: the name {', '.join(map(repr, repeated))} is given to two datasets")
    return sources
