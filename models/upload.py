"""Uploaded source files: stored outside static/, named by id, analysed once."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel import Field, SQLModel

from models.base import enum_field, json_field, timestamp_field


class UploadStatus(StrEnum):
    RECEIVING = "receiving"
    READY = "ready"
    INVALID = "invalid"


class Upload(SQLModel, table=True):
    __tablename__ = "uploads"

    id: int | None = Field(default=None, primary_key=True)
    filename: str = Field(max_length=255)
    # Path relative to UPLOAD_DIR; the operator's filename never becomes a path.
    stored_as: str = Field(max_length=255)
    size_bytes: int = 0
    sha256: str | None = Field(default=None, max_length=64, index=True)
    status: UploadStatus = enum_field(UploadStatus, UploadStatus.RECEIVING)
    encoding: str | None = Field(default=None, max_length=32)
    encoding_note: str | None = None
    delimiter: str | None = Field(default=None, max_length=4)
    headers: list[str] = json_field(list)
    row_count: int | None = None
    preview: list[dict[str, Any]] = json_field(list)
    problems: list[dict[str, Any]] = json_field(list)
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field(index=True)
