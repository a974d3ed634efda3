import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_PENDING: _ClassVar[Phase]
    PHASE_STARTING: _ClassVar[Phase]
    PHASE_READY: _ClassVar[Phase]
    PHASE_EXPIRED: _ClassVar[Phase]
    PHASE_FAILED: _ClassVar[Phase]

class Language(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANGUAGE_UNSPECIFIED: _ClassVar[Language]
    LANGUAGE_PYTHON: _ClassVar[Language]
    LANGUAGE_NODE: _ClassVar[Language]
    LANGUAGE_SHELL: _ClassVar[Language]

class FileType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_TYPE_UNSPECIFIED: _ClassVar[FileType]
    FILE_TYPE_FILE: _ClassVar[FileType]
    FILE_TYPE_DIR: _ClassVar[FileType]
    FILE_TYPE_SYMLINK: _ClassVar[FileType]
    FILE_TYPE_OTHER: _ClassVar[FileType]
PHASE_UNSPECIFIED: Phase
PHASE_PENDING: Phase
PHASE_STARTING: Phase
PHASE_READY: Phase
PHASE_EXPIRED: Phase
PHASE_FAILED: Phase
LANGUAGE_UNSPECIFIED: Language
LANGUAGE_PYTHON: Language
LANGUAGE_NODE: Language
LANGUAGE_SHELL: Language
FILE_TYPE_UNSPECIFIED: FileType
FILE_TYPE_FILE: FileType
FILE_TYPE_DIR: FileType
FILE_TYPE_SYMLINK: FileType
FILE_TYPE_OTHER: FileType

class SandboxRef(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("cpu", "memory", "ephemeral_storage")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_STORAGE_FIELD_NUMBER: _ClassVar[int]
    cpu: str
    memory: str
    ephemeral_storage: str
    def __init__(self, cpu: _Optional[str] = ..., memory: _Optional[str] = ..., ephemeral_storage: _Optional[str] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("egress", "allow", "dns")
    class Egress(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EGRESS_UNSPECIFIED: _ClassVar[Network.Egress]
        EGRESS_NONE: _ClassVar[Network.Egress]
        EGRESS_INTERNET: _ClassVar[Network.Egress]
        EGRESS_ALLOW_LIST: _ClassVar[Network.Egress]
    EGRESS_UNSPECIFIED: Network.Egress
    EGRESS_NONE: Network.Egress
    EGRESS_INTERNET: Network.Egress
    EGRESS_ALLOW_LIST: Network.Egress
    EGRESS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    egress: Network.Egress
    allow: _containers.RepeatedCompositeFieldContainer[EgressRule]
    dns: bool
    def __init__(self, egress: _Optional[_Union[Network.Egress, str]] = ..., allow: _Optional[_Iterable[_Union[EgressRule, _Mapping]]] = ..., dns: _Optional[bool] = ...) -> None: ...

class EgressRule(_message.Message):
    __slots__ = ("cidr", "ports")
    CIDR_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    cidr: str
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    def __init__(self, cidr: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ...) -> None: ...

class Port(_message.Message):
    __slots__ = ("port", "protocol")
    class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PROTOCOL_UNSPECIFIED: _ClassVar[Port.Protocol]
        PROTOCOL_TCP: _ClassVar[Port.Protocol]
        PROTOCOL_UDP: _ClassVar[Port.Protocol]
        PROTOCOL_SCTP: _ClassVar[Port.Protocol]
    PROTOCOL_UNSPECIFIED: Port.Protocol
    PROTOCOL_TCP: Port.Protocol
    PROTOCOL_UDP: Port.Protocol
    PROTOCOL_SCTP: Port.Protocol
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    port: int
    protocol: Port.Protocol
    def __init__(self, port: _Optional[int] = ..., protocol: _Optional[_Union[Port.Protocol, str]] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("namespace", "name", "generate_name", "image", "template", "resources", "ttl_seconds", "idle_timeout_seconds", "network", "env", "labels", "wait_ready", "runtime_class_name", "working_dir", "read_only_root_filesystem", "agent_in_image", "run_as_user", "run_as_group", "files")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATE_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WAIT_READY_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_ROOT_FILESYSTEM_FIELD_NUMBER: _ClassVar[int]
    AGENT_IN_IMAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_AS_USER_FIELD_NUMBER: _ClassVar[int]
    RUN_AS_GROUP_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    generate_name: str
    image: str
    template: str
    resources: Resources
    ttl_seconds: int
    idle_timeout_seconds: int
    network: Network
    env: _containers.ScalarMap[str, str]
    labels: _containers.ScalarMap[str, str]
    wait_ready: bool
    runtime_class_name: str
    working_dir: str
    read_only_root_filesystem: bool
    agent_in_image: bool
    run_as_user: int
    run_as_group: int
    files: _containers.RepeatedCompositeFieldContainer[InitialFile]
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., generate_name: _Optional[str] = ..., image: _Optional[str] = ..., template: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., idle_timeout_seconds: _Optional[int] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., env: _Optional[_Mapping[str, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., wait_ready: _Optional[bool] = ..., runtime_class_name: _Optional[str] = ..., working_dir: _Optional[str] = ..., read_only_root_filesystem: _Optional[bool] = ..., agent_in_image: _Optional[bool] = ..., run_as_user: _Optional[int] = ..., run_as_group: _Optional[int] = ..., files: _Optional[_Iterable[_Union[InitialFile, _Mapping]]] = ...) -> None: ...

class InitialFile(_message.Message):
    __slots__ = ("path", "content", "mode")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: str
    mode: int
    def __init__(self, path: _Optional[str] = ..., content: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("type", "status", "reason", "message", "last_transition_time")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., last_transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Sandbox(_message.Message):
    __slots__ = ("namespace", "name", "uid", "image", "phase", "ready", "conditions", "resources", "ttl_seconds", "idle_timeout_seconds", "network", "env", "labels", "created_at", "ready_at", "expires_at", "last_activity_at", "pod_name", "node_name", "runtime_class_name", "message", "deleting", "extension_seconds", "ttl_expires_at", "template", "start_mode")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_AT_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DELETING_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TTL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    START_MODE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    uid: str
    image: str
    phase: Phase
    ready: bool
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    resources: Resources
    ttl_seconds: int
    idle_timeout_seconds: int
    network: Network
    env: _containers.ScalarMap[str, str]
    labels: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    ready_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    last_activity_at: _timestamp_pb2.Timestamp
    pod_name: str
    node_name: str
    runtime_class_name: str
    message: str
    deleting: bool
    extension_seconds: int
    ttl_expires_at: _timestamp_pb2.Timestamp
    template: str
    start_mode: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ..., image: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., ready: _Optional[bool] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., idle_timeout_seconds: _Optional[int] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., env: _Optional[_Mapping[str, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ready_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pod_name: _Optional[str] = ..., node_name: _Optional[str] = ..., runtime_class_name: _Optional[str] = ..., message: _Optional[str] = ..., deleting: _Optional[bool] = ..., extension_seconds: _Optional[int] = ..., ttl_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., template: _Optional[str] = ..., start_mode: _Optional[str] = ...) -> None: ...

class GetSandboxRequest(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ...) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ("namespace", "label_selector")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    label_selector: str
    def __init__(self, namespace: _Optional[str] = ..., label_selector: _Optional[str] = ...) -> None: ...

class ListSandboxesResponse(_message.Message):
    __slots__ = ("sandboxes",)
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[Sandbox]
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ...) -> None: ...

class DeleteSandboxRequest(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ...) -> None: ...

class DeleteSandboxResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExtendSandboxRequest(_message.Message):
    __slots__ = ("sandbox", "add_seconds")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    ADD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    add_seconds: int
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., add_seconds: _Optional[int] = ...) -> None: ...

class ProcessSelector(_message.Message):
    __slots__ = ("pid", "tag")
    PID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    pid: int
    tag: str
    def __init__(self, pid: _Optional[int] = ..., tag: _Optional[str] = ...) -> None: ...

class StartProcessRequest(_message.Message):
    __slots__ = ("sandbox", "argv", "shell", "env", "cwd", "timeout", "stdin", "close_stdin", "tag", "tty", "size", "buffer_bytes")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    BUFFER_BYTES_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    argv: Argv
    shell: str
    env: _containers.ScalarMap[str, str]
    cwd: str
    timeout: _duration_pb2.Duration
    stdin: bytes
    close_stdin: bool
    tag: str
    tty: bool
    size: Resize
    buffer_bytes: int
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., argv: _Optional[_Union[Argv, _Mapping]] = ..., shell: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stdin: _Optional[bytes] = ..., close_stdin: _Optional[bool] = ..., tag: _Optional[str] = ..., tty: _Optional[bool] = ..., size: _Optional[_Union[Resize, _Mapping]] = ..., buffer_bytes: _Optional[int] = ...) -> None: ...

class ProcessInfo(_message.Message):
    __slots__ = ("pid", "tag", "argv", "tty", "running", "exited", "stdout_start", "stdout_end", "stderr_start", "stderr_end", "started_at")
    PID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    STDOUT_START_FIELD_NUMBER: _ClassVar[int]
    STDOUT_END_FIELD_NUMBER: _ClassVar[int]
    STDERR_START_FIELD_NUMBER: _ClassVar[int]
    STDERR_END_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    pid: int
    tag: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    tty: bool
    running: bool
    exited: Exited
    stdout_start: int
    stdout_end: int
    stderr_start: int
    stderr_end: int
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, pid: _Optional[int] = ..., tag: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., tty: _Optional[bool] = ..., running: _Optional[bool] = ..., exited: _Optional[_Union[Exited, _Mapping]] = ..., stdout_start: _Optional[int] = ..., stdout_end: _Optional[int] = ..., stderr_start: _Optional[int] = ..., stderr_end: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ConnectProcessRequest(_message.Message):
    __slots__ = ("sandbox", "process", "stdout_offset", "stderr_offset", "follow")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    STDOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STDERR_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    process: ProcessSelector
    stdout_offset: int
    stderr_offset: int
    follow: bool
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., process: _Optional[_Union[ProcessSelector, _Mapping]] = ..., stdout_offset: _Optional[int] = ..., stderr_offset: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class ProcessEvent(_message.Message):
    __slots__ = ("stdout", "stderr", "exited", "caught_up")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    stdout: OutputChunk
    stderr: OutputChunk
    exited: Exited
    caught_up: CaughtUp
    def __init__(self, stdout: _Optional[_Union[OutputChunk, _Mapping]] = ..., stderr: _Optional[_Union[OutputChunk, _Mapping]] = ..., exited: _Optional[_Union[Exited, _Mapping]] = ..., caught_up: _Optional[_Union[CaughtUp, _Mapping]] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class CaughtUp(_message.Message):
    __slots__ = ("stdout_end", "stderr_end", "running")
    STDOUT_END_FIELD_NUMBER: _ClassVar[int]
    STDERR_END_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    stdout_end: int
    stderr_end: int
    running: bool
    def __init__(self, stdout_end: _Optional[int] = ..., stderr_end: _Optional[int] = ..., running: _Optional[bool] = ...) -> None: ...

class ListProcessesRequest(_message.Message):
    __slots__ = ("sandbox",)
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ...) -> None: ...

class ListProcessesResponse(_message.Message):
    __slots__ = ("processes",)
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    processes: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    def __init__(self, processes: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ...) -> None: ...

class SendInputRequest(_message.Message):
    __slots__ = ("sandbox", "process", "data", "close")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    process: ProcessSelector
    data: bytes
    close: bool
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., process: _Optional[_Union[ProcessSelector, _Mapping]] = ..., data: _Optional[bytes] = ..., close: _Optional[bool] = ...) -> None: ...

class SendInputResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignalProcessRequest(_message.Message):
    __slots__ = ("sandbox", "process", "signal", "resize")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    process: ProcessSelector
    signal: Signal
    resize: Resize
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., process: _Optional[_Union[ProcessSelector, _Mapping]] = ..., signal: _Optional[_Union[Signal, _Mapping]] = ..., resize: _Optional[_Union[Resize, _Mapping]] = ...) -> None: ...

class SignalProcessResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KillProcessRequest(_message.Message):
    __slots__ = ("sandbox", "process")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    process: ProcessSelector
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., process: _Optional[_Union[ProcessSelector, _Mapping]] = ...) -> None: ...

class KillProcessResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("sandbox", "argv", "shell", "env", "cwd", "timeout", "stdin")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    argv: Argv
    shell: str
    env: _containers.ScalarMap[str, str]
    cwd: str
    timeout: _duration_pb2.Duration
    stdin: bytes
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., argv: _Optional[_Union[Argv, _Mapping]] = ..., shell: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stdin: _Optional[bytes] = ...) -> None: ...

class Argv(_message.Message):
    __slots__ = ("args",)
    ARGS_FIELD_NUMBER: _ClassVar[int]
    args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, args: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecEvent(_message.Message):
    __slots__ = ("started", "stdout", "stderr", "exited")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    started: Started
    stdout: bytes
    stderr: bytes
    exited: Exited
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exited: _Optional[_Union[Exited, _Mapping]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("pid", "pod_name")
    PID_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    pid: int
    pod_name: str
    def __init__(self, pid: _Optional[int] = ..., pod_name: _Optional[str] = ...) -> None: ...

class Exited(_message.Message):
    __slots__ = ("exit_code", "signal", "timed_out", "duration")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    signal: int
    timed_out: bool
    duration: _duration_pb2.Duration
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., timed_out: _Optional[bool] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("start", "stdin", "close_stdin", "resize", "signal")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    stdin: bytes
    close_stdin: CloseStdin
    resize: Resize
    signal: Signal
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., stdin: _Optional[bytes] = ..., close_stdin: _Optional[_Union[CloseStdin, _Mapping]] = ..., resize: _Optional[_Union[Resize, _Mapping]] = ..., signal: _Optional[_Union[Signal, _Mapping]] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("request", "tty", "size")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    request: ExecRequest
    tty: bool
    size: Resize
    def __init__(self, request: _Optional[_Union[ExecRequest, _Mapping]] = ..., tty: _Optional[bool] = ..., size: _Optional[_Union[Resize, _Mapping]] = ...) -> None: ...

class CloseStdin(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Resize(_message.Message):
    __slots__ = ("cols", "rows")
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    cols: int
    rows: int
    def __init__(self, cols: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class Signal(_message.Message):
    __slots__ = ("number",)
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    number: int
    def __init__(self, number: _Optional[int] = ...) -> None: ...

class RunCodeRequest(_message.Message):
    __slots__ = ("sandbox", "language", "code", "env", "cwd", "timeout", "stdin")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    language: Language
    code: str
    env: _containers.ScalarMap[str, str]
    cwd: str
    timeout: _duration_pb2.Duration
    stdin: bytes
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., language: _Optional[_Union[Language, str]] = ..., code: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stdin: _Optional[bytes] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("sandbox", "path", "mode", "parents")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    path: str
    mode: int
    parents: bool
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ..., parents: _Optional[bool] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("sandbox", "path")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    path: str
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., path: _Optional[str] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class ListDirRequest(_message.Message):
    __slots__ = ("sandbox", "path")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    path: str
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., path: _Optional[str] = ...) -> None: ...

class ListDirResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[FileInfo]
    def __init__(self, entries: _Optional[_Iterable[_Union[FileInfo, _Mapping]]] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ("sandbox", "path")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    path: str
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., path: _Optional[str] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("name", "type", "size", "mode", "mtime")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FileType
    size: int
    mode: int
    mtime: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FileType, str]] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., mtime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("sandbox", "path", "recursive")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    path: str
    recursive: bool
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., path: _Optional[str] = ..., recursive: _Optional[bool] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MakeDirRequest(_message.Message):
    __slots__ = ("sandbox", "path", "parents", "mode")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    path: str
    parents: bool
    mode: int
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., path: _Optional[str] = ..., parents: _Optional[bool] = ..., mode: _Optional[int] = ...) -> None: ...

class MakeDirResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("sandbox", "source", "destination")
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    sandbox: SandboxRef
    source: str
    destination: str
    def __init__(self, sandbox: _Optional[_Union[SandboxRef, _Mapping]] = ..., source: _Optional[str] = ..., destination: _Optional[str] = ...) -> None: ...

class MoveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
