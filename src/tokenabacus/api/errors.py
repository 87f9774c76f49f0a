"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

from __future__ import annotations

import orjson


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )

    @property
    def error_code(self) -> str:
        return self.code or self.type


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def unauthorized(message: str = "Incorrect or missing API key. Pass it as 'Authorization: Bearer sk-...'.") -> APIError:
    return APIError(401, message, "invalid_request_error", None, "invalid_api_key")


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


def upstream_error(message: str, code: str = "upstream_error") -> APIError:
    return APIError(502, message, "api_error", None, code)


def upstream_timeout(message: str = "The upstream model server did not answer in time.") -> APIError:
    return APIError(504, message, "api_error", None, "upstream_timeout")


def internal_error() -> APIError:
    return APIError(500, "The gateway failed to handle this request.", "api_error", None, "internal_error")
