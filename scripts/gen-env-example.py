#!/usr/bin/env python3
"""Generate .env.example from the settings models and compose.yaml, so it cannot drift.

    python3 scripts/gen-env-example.py           # rewrite .env.example
    python3 scripts/gen-env-example.py --check   # exit 1 if .env.example is stale

Theory of operation
-------------------
Every ``BUZON_*`` variable a process reads is a field of a pydantic-settings model
(``SETTINGS`` below): its name is the model's ``env_prefix`` plus the field name, its
comment the field's ``description``, its default the field's default. Compose adds
variables of its own (image base, published ports...), kept by hand in
``COMPOSE_ONLY`` with their descriptions. compose.yaml is read as text to learn how
each variable reaches the containers:

* ``VAR: ${VAR:-default}``: interpolated; the compose default is the one shown;
* ``VAR:`` (no value): passed through only when set; the model's default applies;
* ``VAR: value``: fixed by compose.yaml, so setting it in .env changes nothing there;
* absent: read only when the server runs natively.

``tests/unit/test_env_example.py`` runs ``render()`` and compares it with the file,
and checks that every ``${VAR}`` in compose.yaml is documented here.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_FILE = ROOT / "compose.yaml"

#: The settings models, in the order their sections appear: (title, "module:Class").
SETTINGS: list[tuple[str, str]] = [
    ("Server (the buzon SMTP server, service smtp)", "buzon.config:ServerSettings"),
    ("Monitor client (monitor-client)", "buzon.config:ClientSettings"),
]
#: Optional models: included when their module defines them (the sidecar's settings).
OPTIONAL_SETTINGS: list[tuple[str, str]] = [
    ("Transform sidecars (buzon-sidecar, services transform-tac and spamassassin)",
     "buzon.transform.sidecar:SidecarSettings"),
]

#: Variables only compose.yaml reads: name → (default, one-line description).
COMPOSE_ONLY: dict[str, tuple[str, str]] = {
    "BUZON_BASE_IMAGE": (
        "python:3.12-slim",
        ("Base image of services/Dockerfile (every target); without a registry use "
         "buzon-base:bookworm from scripts/build-base-image.sh."),
    ),
    "BUZON_IMAP_PUBLISH": ("143", "Host port (or address:port) for IMAP with STARTTLS (service imap)."),
    "BUZON_IMAPS_PUBLISH": ("993", "Host port (or address:port) for IMAP over TLS (service imap)."),
    "BUZON_POP3_PUBLISH": ("110", "Host port (or address:port) for POP3 with STARTTLS (service imap)."),
    "BUZON_POP3S_PUBLISH": ("995", "Host port (or address:port) for POP3 over TLS (service imap)."),
    "BUZON_IMAP_MEMORY_LIMIT": ("512m", "Memory limit of the imap container (Dovecot)."),
    "BUZON_IMAP_PIDS_LIMIT": ("512", "Process limit of the imap container (a few per IMAP session)."),
    "BUZON_SMTPS_PUBLISH": (
        "4650",
        ("Host port (or address:port) for smtp's implicit-TLS listener (RFC 8314); "
         "465 is the usual number."),
    ),
    "BUZON_IMAGE_TAG": ("local", "Tag of the images compose builds (buzon-smtp:<tag>, ...)."),
    "BUZON_PROMETHEUS_PUBLISH": (
        "127.0.0.1:9090",
        ("Host address:port of the monitoring profile's Prometheus (UI and API); loopback "
         "by default."),
    ),
    "BUZON_SMTP_PUBLISH": (
        "2525",
        "Host port publishing SMTP (container port 2525); ADDRESS:PORT binds one address.",
    ),
    "BUZON_MONITOR_PUBLISH": (
        "2626",
        "Host UDP port on 127.0.0.1 publishing the monitor (container port 2626).",
    ),
    "BUZON_HEALTHCHECK_INTERVAL": (
        "10s",
        ("How often Docker runs each service's healthcheck (each SMTP check is one "
        "connection)."),
    ),
    "BUZON_SMTP_MEMORY_LIMIT": (
        "1g", "Memory limit of the smtp container (deploy.resources.limits)."
    ),
    "BUZON_SMTP_PIDS_LIMIT": (
        "256", "Most processes and threads in the smtp container (deploy.resources.limits)."
    ),
    "BUZON_TAC_MEMORY_LIMIT": (
        "256m", "Memory limit of the transform-tac container (deploy.resources.limits)."
    ),
    "BUZON_TAC_PIDS_LIMIT": (
        "64", "Most processes and threads in the transform-tac container (deploy.resources.limits)."
    ),
    "BUZON_SPAMASSASSIN_MEMORY_LIMIT": (
        "768m", "Memory limit of the spamassassin container (deploy.resources.limits)."
    ),
    "BUZON_SPAMASSASSIN_PIDS_LIMIT": (
        "128", "Most processes and threads in the spamassassin container (deploy.resources.limits)."
    ),
}

#: Settings compose.yaml deliberately does not pass to their containers: name → why.
NATIVE_ONLY: dict[str, str] = {
    "BUZON_SMTP_LISTEN": "the container listens on all its addresses",
    "BUZON_SMTP_PORT": "2525 inside the container; change BUZON_SMTP_PUBLISH",
    "BUZON_SMTPS_PORT": "4650 inside the container; change BUZON_SMTPS_PUBLISH",
    "BUZON_MONITOR_PORT": "2626 inside the container; change BUZON_MONITOR_PUBLISH",
    "BUZON_MONITOR_TOKEN_FILE": "in Docker, mount a secret with a compose override",
    "BUZON_DATA_DIR": "/var/lib/buzon, the buzon-data volume",
    "BUZON_MAIL_ROOT": "mail stays in the volume, under /var/lib/buzon/mail",
    "BUZON_INSTANCE": "one smtp in Compose; deploy/stack.yaml sets it to the Swarm task slot",
    "BUZON_TRANSFORM": "the smtp image carries no programs; use BUZON_TRANSFORM_SIDECARS",
    "BUZON_SIDECAR_LISTEN": "the sidecar images listen on 0.0.0.0",
    "BUZON_SIDECAR_PORT": "7000 in the sidecar images, the port BUZON_TRANSFORM_SIDECARS names",
    "BUZON_SIDECAR_ROOT": "/var/lib/buzon/work (the buzon-work volume) in the sidecar images",
    "BUZON_SIDECAR_COMMAND": "each sidecar image runs its own program (tac, spamc)",
}

_ENV_LINE = re.compile(r"^\s+(BUZON_[A-Z0-9_]+):[ \t]*(.*?)\s*$")
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")
_SERVICE_LINE = re.compile(r"^  ([a-z][a-z0-9-]*):\s*$")


@dataclass(frozen=True)
class ComposeUse:
    """How compose.yaml hands one variable to one service."""

    service: str
    kind: str  # "interpolated", "passthrough" or "fixed"
    value: str  # the compose default (interpolated) or the fixed value


def compose_uses(text: str) -> dict[str, list[ComposeUse]]:
    """Map each ``BUZON_*`` key of the services' ``environment:`` maps to its uses."""
    uses: dict[str, list[ComposeUse]] = {}
    service = ""
    in_services = False
    for line in text.splitlines():
        if not line.startswith(" ") and line.strip():
            in_services = line.startswith("services:")
            continue
        match = _SERVICE_LINE.match(line)
        if in_services and match:
            service = match.group(1)
            continue
        match = _ENV_LINE.match(line)
        if not (in_services and match):
            continue
        name, value = match.groups()
        value = value.split(" #", 1)[0].strip().strip("'\"")
        interpolation = _INTERPOLATION.fullmatch(value)
        if not value:
            use = ComposeUse(service, "passthrough", "")
        elif interpolation and interpolation.group(1) == name:
            use = ComposeUse(service, "interpolated", interpolation.group(2) or "")
        else:
            use = ComposeUse(service, "fixed", value)
        uses.setdefault(name, []).append(use)
    return uses


def compose_variables(text: str) -> dict[str, str]:
    """Every ``${VAR:-default}`` in compose.yaml: name → default."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in _INTERPOLATION.finditer(line):
            found.setdefault(match.group(1), match.group(2) or "")
    return found


def _load(spec: str) -> Any | None:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return None
    return getattr(module, class_name, None)


def _show_default(field: Any) -> str:
    if field.default_factory is not None:
        return "(computed: " + getattr(field.default_factory, "__name__", "factory") + ")"
    default = field.default
    if default is None or default is PydanticUndefined:
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if hasattr(default, "get_secret_value"):
        return ""
    return str(default)


def _note(name: str, model_default: str, uses: list[ComposeUse]) -> tuple[str, str]:
    """The compose note for a model variable and the default to show."""
    notes = []
    if name in NATIVE_ONLY and name != "BUZON_DATA_DIR":
        notes.append(f"not passed by compose.yaml: {NATIVE_ONLY[name]}")
    elif not uses:
        notes.append("not passed by compose.yaml")
    fixed = sorted({f"{u.service}={u.value}" for u in uses if u.kind == "fixed"})
    interpolated = [u for u in uses if u.kind == "interpolated"]
    shown = model_default
    if interpolated:
        shown = interpolated[0].value
        if model_default.startswith("(computed"):
            notes.append("native default: the machine's host name")
        elif shown != model_default:
            notes.append(f"native default {model_default or 'unset'}")
    if fixed:
        notes.append("fixed in compose.yaml: " + ", ".join(fixed))
    return (f" [{'; '.join(notes)}]" if notes else ""), shown


def render(compose_text: str | None = None) -> str:
    """The full text of .env.example."""
    text = COMPOSE_FILE.read_text() if compose_text is None else compose_text
    uses = compose_uses(text)
    out = [
        "# Buzón: every configuration variable, one comment line and its default each.",
        "# Nothing is required: `docker compose up` works with no .env. Copy this file to",
        "# .env and uncomment what you change. Notes in [brackets] say how compose.yaml",
        "# passes a variable; unset ones without a default keep the documented behaviour.",
        "# Generated by scripts/gen-env-example.py from src/buzon/config.py and compose.yaml:",
        "# edit those, then run it again (tests/unit/test_env_example.py checks).",
    ]
    out += ["", "# === Compose (compose.yaml only) ==="]
    for name, (default, description) in COMPOSE_ONLY.items():
        out += [f"# {description}", f"#{name}={default}"]

    seen: set[str] = set()
    sections: list[tuple[str, Any]] = [(t, _load(s)) for t, s in SETTINGS]
    titles = {t for t, _ in sections}
    for title, spec in OPTIONAL_SETTINGS:
        model = _load(spec)
        if model is not None and title not in titles:
            sections.append((title, model))
            titles.add(title)
    for title, model in sections:
        if model is None:
            continue
        prefix = model.model_config.get("env_prefix", "")
        out += ["", f"# === {title} ==="]
        shared = []
        for field_name, field in model.model_fields.items():
            name = (prefix + field_name).upper()
            if name in seen:
                shared.append(name)
                continue
            seen.add(name)
            description = (field.description or "").strip().replace("\n", " ")
            note, shown = _note(name, _show_default(field), uses.get(name, []))
            out += [f"# {description}{note}", f"#{name}={shown}"]
        if shared:
            out.append(f"# Also read here, documented above: {', '.join(shared)}.")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if .env.example is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not ENV_EXAMPLE.exists() or ENV_EXAMPLE.read_text() != text:
            print(".env.example is stale: run python3 scripts/gen-env-example.py", file=sys.stderr)
            return 1
        return 0
    ENV_EXAMPLE.write_text(text)
    print(f"wrote {ENV_EXAMPLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
