"""What a refresh is asked to read: one typed object that `osteo refresh` builds and flows/refresh.py takes.

A pydantic model so that Prefect validates it (a flow run, or a deployment's parameters) and shows each
field with its description in its UI; frozen, and an unknown field is refused, not ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RefreshOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # the order is the refresh_run row's (its `inputs` column is this object as a dict)
    dicom_dir: str = Field(description="folder of DICOM files, searched recursively")
    dexa_dir: str = Field(description="folder of DEXA exports (CSV with , ; or tab, .xlsx); any other file is "
                                      "quarantined")
    annotations_dir: str | None = Field(default=None, description="folder of LabelImg VOC XML boxes (none: no boxes "
                                                                  "read)")
    column_map_file: str | None = Field(default=None, description="JSON file mapping other DEXA column names to ours")
    annotation_map_file: str | None = Field(default=None, description="CSV or JSON mapping the image names of VOC "
                                                                      "files named otherwise to SOP Instance UIDs or "
                                                                      "DICOM paths")
    retry_quarantined: bool = Field(default=False, description="judge every quarantined file again, even if nothing "
                                                               "changed")
    rehash: bool = Field(default=False, description="read and hash every file again (by default a file whose size "
                                                    "and mtime match its last read is not opened)")

    def inputs(self) -> dict[str, str | bool | None]:
        """The refresh_run row's record of what was asked."""
        return self.model_dump()
