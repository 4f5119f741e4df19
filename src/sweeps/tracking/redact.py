"""Credentials out of everything `sweeps` writes or prints: URIs in params, tags, logs and files.

`redact_uri` drops `user:password@` and secret query values from one URI; `redact_text` does it
for every URI inside free text, including Hydra's escaped form (`http\\://alice\\:pw@host`, as
Hydra writes a job's overrides). `RedactCredentials` is the logging filter that Hydra's logging
config (conf/config.yaml) puts on every handler, so launch lines such as `#0 : tracking.uri=...`
are scrubbed too; `ScrubHydraOutput` rewrites the config files Hydra saves for each job. No
MLflow or TensorFlow import here: logging is configured before either.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, urlencode

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Query keys of a store URI that are settings, not secrets; every other value is redacted.
SAFE_QUERY_KEYS = {"timeout", "mode", "cache", "uri", "check_same_thread", "sslmode", "charset", "host", "port"}
# scheme, the backslashes Hydra's escaping may put before `:`, the rest up to a separator
_URL_IN_TEXT = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)(\\*)://([^\s,'\"\]]+)")
# `user:password@` right after `://`, whatever characters the password holds (`,` `'` `]` too)
_USERINFO = re.compile(r"(\\*://)[^\s/@]*@")


def redact_uri(uri: Optional[str]) -> Optional[str]:
    """The URI without credentials: `user:password@` becomes `***@`, secret query values `***`."""
    if not uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    authority, tail = re.match(r"([^/?#]*)(.*)", rest, re.S).groups()
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    path, _, query = tail.partition("?")
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        path += "?" + urlencode([(k, v if k.lower() in SAFE_QUERY_KEYS else "***") for k, v in pairs], safe="*/")
    return f"{scheme}://{authority}{path}"


def redact_text(text: str) -> str:
    """Every URI inside free text (overrides, a command line, a run name, a log line) redacted."""

    def one(match: re.Match) -> str:
        scheme, escape, rest = match.groups()
        return scheme + escape + redact_uri(f"{scheme}://{rest}")[len(scheme):]

    return _URL_IN_TEXT.sub(one, _USERINFO.sub(r"\1***@", text))


class RedactCredentials(logging.Filter):
    """Logging filter: the record's message with every URI redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = redact_text(message)
        if shown != message:
            record.msg, record.args = shown, None
        if record.exc_info and not record.exc_text:  # a traceback can quote a URI (MLflow's errors do)
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


def scrub_files(folder: Path) -> list[Path]:
    """Rewrite every YAML file in `folder` with its URIs redacted; returns the files changed."""
    changed = []
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        shown = redact_text(text)
        if shown != text:
            path.write_text(shown)
            changed.append(path)
    return changed


class ScrubHydraOutput(Callback):
    """Hydra callback: Hydra saves each job's config and overrides (`.hydra/*.yaml`) just before
    `on_job_start`; this rewrites them with credentials redacted, in the job's own process."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.output_subdir is not None:
            scrub_files(Path(hydra.runtime.output_dir) / hydra.output_subdir)
