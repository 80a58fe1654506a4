from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbeddingFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBEDDING_FORMAT_UNSPECIFIED: _ClassVar[EmbeddingFormat]
    EMBEDDING_FORMAT_PACKED_FLOAT32: _ClassVar[EmbeddingFormat]
    EMBEDDING_FORMAT_FLOAT_LIST: _ClassVar[EmbeddingFormat]
EMBEDDING_FORMAT_UNSPECIFIED: EmbeddingFormat
EMBEDDING_FORMAT_PACKED_FLOAT32: EmbeddingFormat
EMBEDDING_FORMAT_FLOAT_LIST: EmbeddingFormat

class Item(_message.Message):
    __slots__ = ("id", "text", "image")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    image: bytes
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class EmbedOptions(_message.Message):
    __slots__ = ("raw", "truncate", "format")
    RAW_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    raw: bool
    truncate: bool
    format: EmbeddingFormat
    def __init__(self, raw: _Optional[bool] = ..., truncate: _Optional[bool] = ..., format: _Optional[_Union[EmbeddingFormat, str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("dim", "packed", "values")
    DIM_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    dim: int
    packed: bytes
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, dim: _Optional[int] = ..., packed: _Optional[bytes] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class EmbedResult(_message.Message):
    __slots__ = ("id", "embedding", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    embedding: Embedding
    error: ItemError
    def __init__(self, id: _Optional[str] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("items", "options")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    options: EmbedOptions
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., options: _Optional[_Union[EmbedOptions, _Mapping]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EmbedResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EmbedResult, _Mapping]]] = ...) -> None: ...

class EmbedStreamRequest(_message.Message):
    __slots__ = ("items", "options")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    options: EmbedOptions
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., options: _Optional[_Union[EmbedOptions, _Mapping]] = ...) -> None: ...

class EmbedStreamResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EmbedResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EmbedResult, _Mapping]]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("query", "candidates", "truncate")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    query: Item
    candidates: _containers.RepeatedCompositeFieldContainer[Item]
    truncate: bool
    def __init__(self, query: _Optional[_Union[Item, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., truncate: _Optional[bool] = ...) -> None: ...

class RankedCandidate(_message.Message):
    __slots__ = ("id", "index", "cosine", "probability", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    index: int
    cosine: float
    probability: float
    score: int
    def __init__(self, id: _Optional[str] = ..., index: _Optional[int] = ..., cosine: _Optional[float] = ..., probability: _Optional[float] = ..., score: _Optional[int] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("query_id", "candidates")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[RankedCandidate]
    def __init__(self, query_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[RankedCandidate, _Mapping]]] = ...) -> None: ...

class RankStreamRequest(_message.Message):
    __slots__ = ("query", "candidates", "truncate")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    query: Item
    candidates: _containers.RepeatedCompositeFieldContainer[Item]
    truncate: bool
    def __init__(self, query: _Optional[_Union[Item, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., truncate: _Optional[bool] = ...) -> None: ...

class RankStreamResponse(_message.Message):
    __slots__ = ("query_id", "candidates", "error")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[RankedCandidate]
    error: ItemError
    def __init__(self, query_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[RankedCandidate, _Mapping]]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_name", "model_source", "model_family", "embedding_dim", "image_size", "text_context_length", "dtype", "device", "max_batch_size", "max_wait_ms", "max_queue_size", "max_image_bytes", "max_image_pixels", "server_version", "logit_scale", "logit_bias")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEXT_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOGIT_SCALE_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIAS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_source: str
    model_family: str
    embedding_dim: int
    image_size: int
    text_context_length: int
    dtype: str
    device: str
    max_batch_size: int
    max_wait_ms: int
    max_queue_size: int
    max_image_bytes: int
    max_image_pixels: int
    server_version: str
    logit_scale: float
    logit_bias: float
    def __init__(self, model_name: _Optional[str] = ..., model_source: _Optional[str] = ..., model_family: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., image_size: _Optional[int] = ..., text_context_length: _Optional[int] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_wait_ms: _Optional[int] = ..., max_queue_size: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., server_version: _Optional[str] = ..., logit_scale: _Optional[float] = ..., logit_bias: _Optional[float] = ...) -> None: ...
