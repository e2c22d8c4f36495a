"""Hide secret values in command lines and text before anyone sees them.

Plain Python (no Reflex, no FastAPI): the collector imports this module to
redact ``Operation.command`` once, where it is read, so neither the UI nor the
API ever holds a secret from a command line. Process environments are never
read into an operation at all.

What is hidden (the value becomes ``***``):

* values of secret-named flags, ``--flag value`` and ``--flag=value``: any flag
  whose last word is token, secret, password, passwd, pass, passphrase, key,
  apikey, credential(s) or auth
  (``--token``, ``--hf-token``, ``--api_key``, ``--access-token``, ...; but not
  ``--max-tokens`` or ``--tokenizer``);
* ``NAME=value`` arguments whose name ends in such a word
  (``HF_TOKEN=``, ``OPENAI_API_KEY=``, ``DB_PASSWORD=``, ``PASSWORD=``);
* credentials inside URLs (``https://user:pass@host`` -> ``https://user:***@host``),
  a long user-only credential (``https://ghp_xxx@github.com``), and secret-named
  query parameters (``?token=...``);
* values of secret-named keys in JSON, Python dicts and YAML
  (``{"HF_TOKEN": "..."}``, ``'api_key': '...'``, ``password: "..."``);
* ``Authorization:`` header values and ``Bearer <token>``;
* strings shaped like well-known API tokens (``hf_...``, ``sk-...``,
  ``ghp_...``, ``xoxb-...``, ``AKIA...``) wherever they appear.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

MASK = "***"

# The last word of a flag or variable name that marks its value as secret.
_SECRET_WORDS = (
    r"token|secret|password|passwd|pass|passphrase|key|apikey|credentials?|auth"
)
_SECRET_NAME = re.compile(rf"(?:^|[_.-])(?:{_SECRET_WORDS})$", re.IGNORECASE)
# A flag that turns a secret off (``--no-auth``) carries no value.
_NEGATED = re.compile(r"^(?:no|disable|without)[_-]", re.IGNORECASE)

_QUOTED_VALUE = r"\"[^\"]*\"|'[^']*'|[^\s\"']\S*"
# --flag=value / --flag value / -flag=value inside free text.
_FLAG_IN_TEXT = re.compile(rf"(?P<flag>(?<![\w-])--?(?P<name>[A-Za-z][\w.-]*))(?P<sep>=|\s+)(?P<value>{_QUOTED_VALUE})")
# NAME=value (environment-style or dotted config keys) inside free text.
_ASSIGN_IN_TEXT = re.compile(rf"(?<![\w.?&;/-])(?P<name>[A-Za-z_][\w.]*)=(?P<value>{_QUOTED_VALUE})")
# "NAME": value  /  'NAME': value  /  NAME: "value"  (JSON, Python dicts, YAML)
_KEYED_IN_TEXT = re.compile(
    r"(?P<key>(?P<q>[\"'])(?P<qname>[A-Za-z_][\w.-]*)(?P=q)\s*:\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,}\]]+)"
    r"|(?P<ukey>(?<![\w.-])(?P<uname>[A-Za-z_][\w.-]*):\s*)(?P<uvalue>\"[^\"]*\"|'[^']*')"
)
# scheme://user:password@host  and  scheme://longtoken@host
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/@?#]+)@")
# ?token=...&api_key=...
_URL_QUERY_SECRET = re.compile(rf"(?P<sep>[?&;])(?P<name>[\w.-]*(?:{_SECRET_WORDS}))=(?P<value>[^&#\s\"']*)", re.IGNORECASE)
# Authorization: <scheme> <credentials>  /  Bearer <token>
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:proxy-)?authorization\s*[:=]\s*)(?P<scheme>(?:bearer|basic|token|digest)\s+)?(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?P<value>(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
# Token shapes of popular services, wherever they appear.
_KNOWN_TOKENS = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,})"
)
# A user-only URL credential this long is a token, not a user name.
_LONG_USERINFO = 20


def is_secret_name(name: str) -> bool:
    """Whether a flag or variable name (without dashes) names a secret."""
    name = name.lstrip("-")
    return bool(name) and not _NEGATED.match(name) and bool(_SECRET_NAME.search(name))


def _mask_quoted(value: str) -> str:
    """Replace a value by the mask, keeping its quotes."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return f"{value[0]}{MASK}{value[0]}"
    return MASK


def _redact_url_userinfo(match: re.Match[str]) -> str:
    userinfo = match["userinfo"]
    if ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        return f"{match['scheme']}{user}:{MASK}@"
    if len(userinfo) >= _LONG_USERINFO or _KNOWN_TOKENS.fullmatch(userinfo):
        return f"{match['scheme']}{MASK}@"
    return match[0]


def _redact_flag(match: re.Match[str]) -> str:
    if not is_secret_name(match["name"]) or match["value"].startswith("--"):
        return match[0]
    return f"{match['flag']}{match['sep']}{_mask_quoted(match['value'])}"


def _redact_assignment(match: re.Match[str]) -> str:
    if not is_secret_name(match["name"]):
        return match[0]
    return f"{match['name']}={_mask_quoted(match['value'])}"


def _redact_keyed(match: re.Match[str]) -> str:
    if match["qname"] is not None:
        if not is_secret_name(match["qname"]):
            return match[0]
        return f"{match['key']}{_mask_quoted(match['value'])}"
    if not is_secret_name(match["uname"]):
        return match[0]
    return f"{match['ukey']}{_mask_quoted(match['uvalue'])}"


def _redact_auth_header(match: re.Match[str]) -> str:
    return f"{match['head']}{match['scheme'] or ''}{MASK}"


def redact_text(text: str) -> str:
    """Hide secret values in free text such as a command line as one string.

    Args:
        text: Any text; ``None``-safe callers should pass ``""``.

    Returns:
        The text with every recognised secret value replaced by ``***``.
    """
    if not text:
        return text
    text = _AUTH_HEADER.sub(_redact_auth_header, text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _URL_USERINFO.sub(_redact_url_userinfo, text)
    text = _URL_QUERY_SECRET.sub(lambda m: f"{m['sep']}{m['name']}={MASK}", text)
    text = _FLAG_IN_TEXT.sub(_redact_flag, text)
    text = _ASSIGN_IN_TEXT.sub(_redact_assignment, text)
    text = _KEYED_IN_TEXT.sub(_redact_keyed, text)
    return _KNOWN_TOKENS.sub(MASK, text)


def _display_quote(arg: str) -> str:
    """Quote an argument for display only when it would be ambiguous unquoted."""
    if arg and not re.search(r"[\s\"'\\]", arg):
        return arg
    return shlex.quote(arg)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """Redact each argument of an argv list, knowing where arguments begin and end.

    A secret-named flag hides the whole next argument (``--token abc``), and
    each argument is also passed through :func:`redact_text`.
    """
    out: list[str] = []
    hide_next = False
    for raw in argv:
        arg = str(raw)
        if hide_next and not arg.startswith("--"):
            out.append(MASK)
            hide_next = False
            continue
        hide_next = False
        if arg.startswith("-") and "=" not in arg and is_secret_name(arg):
            hide_next = True
            out.append(arg)
            continue
        out.append(redact_text(arg))
    return out


def redact_command(argv: Sequence[str] | None) -> str:
    """A process's argv as one display string with secret values hidden.

    Args:
        argv: The command line as a list (``psutil.Process.cmdline()``).

    Returns:
        The arguments joined by spaces (quoted where needed), secrets as ``***``;
        ``""`` for an empty or missing argv.
    """
    if not argv:
        return ""
    return " ".join(_display_quote(arg) for arg in redact_argv(argv))
