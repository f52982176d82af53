"""Transforms: external programs run on each queued message before delivery (SPEC §4).

Where each part lives:

- ``base``: what a transform is (:class:`Transform`); ``failures``: how it fails
  (:class:`FailureKind`, :class:`TransformError`);
- ``command``: :func:`run_command`, the one place a program is run, and
  :class:`LocalCommand`, a program run as a child of the server;
- ``client``: :class:`SidecarTransform` and :func:`health`, the smtp side of a sidecar;
- ``runner``: :func:`build_transforms` (settings → transform) and :class:`Chain`;
- ``wire``: the sans-IO sidecar handoff format; ``auth``: its key, seals and
  replay guard (:func:`load_key`); ``paths``: its job names and work-area paths
  (:func:`check_job`, :func:`confine`, :func:`relativize`); ``keygen``: the
  one-shot that writes the key;
- ``sidecar``: the ``buzon-sidecar`` command (flags, ``main``), with its
  ``sidecar_settings`` and its ``sidecar_server``;
- ``switch``: the run-time on/off switch.

This package re-exports what the server and tests use; the sidecar and the switch
are imported from their modules.
"""

from buzon.transform.auth import load_key
from buzon.transform.base import Transform
from buzon.transform.client import SidecarTransform, health
from buzon.transform.command import LocalCommand, run_command
from buzon.transform.failures import RETRYABLE, WIRE_KINDS, FailureKind, TransformError
from buzon.transform.paths import check_job, confine, relativize
from buzon.transform.runner import Chain, build_transforms
from buzon.transform.wire import (
    MAX_LINE,
    BadField,
    BadVersion,
    ErrorReply,
    HealthOk,
    HealthRequest,
    LineTooLong,
    NotJSON,
    Op,
    PathRefused,
    ProtocolError,
    Stamp,
    TransformOk,
    TransformRequest,
    UnknownOp,
    UnknownStatus,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

__all__ = [
    "MAX_LINE",
    "RETRYABLE",
    "WIRE_KINDS",
    "BadField",
    "BadVersion",
    "Chain",
    "ErrorReply",
    "FailureKind",
    "HealthOk",
    "HealthRequest",
    "LineTooLong",
    "LocalCommand",
    "NotJSON",
    "Op",
    "PathRefused",
    "ProtocolError",
    "SidecarTransform",
    "Stamp",
    "Transform",
    "TransformError",
    "TransformOk",
    "TransformRequest",
    "UnknownOp",
    "UnknownStatus",
    "build_transforms",
    "check_job",
    "confine",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "health",
    "load_key",
    "relativize",
    "run_command",
]
