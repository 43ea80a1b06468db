"""IO descriptors for `Service.api`: decode a request body into a Python value, encode a result.

Deliberately small: `JSON`, `Text` and `NumpyNdarray` (when numpy is importable). A body that
cannot be decoded raises `InvalidArgument` (HTTP 400) with the reason.
"""

from __future__ import annotations

import dataclasses
import io
import json
from abc import ABC, abstractmethod
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from kuberunner.exceptions import InvalidArgument

JSON_TYPE: Final = "application/json"
TEXT_TYPE: Final = "text/plain; charset=utf-8"
NPY_TYPE: Final = "application/x-kuberunner-npy"


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class IODescriptor(ABC):
    """Converts between HTTP bodies and the values an API function takes or returns."""

    media_type: str = "application/octet-stream"

    @abstractmethod
    def decode(self, body: bytes, content_type: str | None = None) -> Any:
        """The value an endpoint function receives for this request body."""

    @abstractmethod
    def encode(self, value: Any) -> tuple[bytes, str]:
        """The response body and its content type for a function's return value."""


def _json_default(value: Any) -> Any:
    # numpy arrays and scalars, dataclasses and pydantic models are common endpoint results.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class JSON(IODescriptor):
    """JSON bodies; with `pydantic_model`, the decoded value is validated into that model."""

    media_type = JSON_TYPE

    def __init__(self, pydantic_model: type[BaseModel] | None = None) -> None:
        self.pydantic_model = pydantic_model

    def decode(self, body: bytes, content_type: str | None = None) -> Any:
        try:
            value = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
        if self.pydantic_model is None:
            return value
        try:
            return self.pydantic_model.model_validate(value)
        except ValidationError as exc:
            raise InvalidArgument(f"request body does not match the schema: {exc}") from None

    def encode(self, value: Any) -> tuple[bytes, str]:
        return json.dumps(value, default=_json_default).encode(), JSON_TYPE


class Text(IODescriptor):
    """UTF-8 text bodies."""

    media_type = TEXT_TYPE

    def decode(self, body: bytes, content_type: str | None = None) -> str:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"request body is not UTF-8 text: {exc}") from None

    def encode(self, value: Any) -> tuple[bytes, str]:
        return str(value).encode("utf-8"), TEXT_TYPE


class NumpyNdarray(IODescriptor):
    """numpy arrays: JSON (nested lists) or `.npy` bodies in, JSON out.

    `.npy` bodies (content type `application/x-kuberunner-npy` or `application/octet-stream`)
    are loaded with `allow_pickle=False`, so object arrays are refused.
    """

    media_type = JSON_TYPE

    def __init__(
        self,
        dtype: Any = None,
        shape: tuple[int, ...] | None = None,
        enforce_dtype: bool = False,
        enforce_shape: bool = False,
    ) -> None:
        import numpy as np  # noqa: F401  # fail at definition time when numpy is missing

        self.dtype = dtype
        self.shape = shape
        self.enforce_dtype = enforce_dtype
        self.enforce_shape = enforce_shape

    def decode(self, body: bytes, content_type: str | None = None) -> Any:
        import numpy as np

        try:
            if _base_type(content_type) in {NPY_TYPE, "application/octet-stream"}:
                array = np.load(io.BytesIO(body), allow_pickle=False)
            else:
                array = np.asarray(json.loads(body))
        except (ValueError, TypeError, OSError) as exc:
            raise InvalidArgument(f"request body is not an array: {exc}") from None
        return self._check(array)

    def _check(self, array: Any) -> Any:
        import numpy as np

        if self.dtype is not None:
            if self.enforce_dtype and array.dtype != np.dtype(self.dtype):
                raise InvalidArgument(f"expected dtype {np.dtype(self.dtype)}, got {array.dtype}")
            try:
                array = array.astype(self.dtype, casting="same_kind")
            except TypeError as exc:
                raise InvalidArgument(f"cannot convert to dtype {self.dtype}: {exc}") from None
        if self.enforce_shape and self.shape is not None:
            matches = len(array.shape) == len(self.shape) and all(
                want in (-1, got) for want, got in zip(self.shape, array.shape, strict=True)
            )
            if not matches:
                raise InvalidArgument(f"expected shape {self.shape}, got {array.shape}")
        return array

    def encode(self, value: Any) -> tuple[bytes, str]:
        import numpy as np

        return json.dumps(np.asarray(value).tolist()).encode(), JSON_TYPE
