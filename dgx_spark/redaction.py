"""Hide secret values in command lines and text before anyone sees them.

Plain Python with no imports of this package, below every layer: the collector uses it to
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
* the same keys with a plain value after ``: `` (YAML, HTTP headers):
  ``password: x``, ``WANDB_API_KEY: v``, ``x-api-key: ...``, ``api-key: ...``
  (also inside ``--header 'X-Api-Key: ...'``);
* names that are secret without a separator: ``PGPASSWORD=``, ``MYSQL_PWD=``
  (``*_PWD``; but not ``PWD`` or ``OLDPWD``, which are folders);
* ``Authorization:`` header values and ``Bearer <token>`` (a closing bracket
  after the token stays);
* PEM private keys, the whole block (:func:`redact_lines` also across lines);
* strings shaped like well-known API tokens (``hf_...``, ``sk-...``,
  ``ghp_...``, ``xoxb-...``, ``AKIA...``, ``sk_live_...``, ``AIza...``,
  ``npm_...``, JWTs ``eyJ...``) and launched jobs' own ``op1.`` tokens,
  wherever they appear.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

MASK = "***"

# The last word of a flag or variable name that marks its value as secret.
_SECRET_WORDS = (
    r"token|secret|password|passwd|pass|passphrase|key|apikey|credentials?|auth"
)
_SECRET_NAME = re.compile(
    rf"(?:^|[_.-])(?:{_SECRET_WORDS})$|(?:password|passwd|passphrase|apikey)$|[_.-]pwd$", re.IGNORECASE
)
# A flag that turns a secret off (``--no-auth``) carries no value.
_NEGATED = re.compile(r"^(?:no|disable|without)[_-]", re.IGNORECASE)

_QUOTED_VALUE = r"\"[^\"]*\"|'[^']*'|[^\s\"']\S*"
# --flag=value / --flag value / -flag=value inside free text.
_FLAG_IN_TEXT = re.compile(rf"(?P<flag>(?<![\w-])--?(?P<name>[A-Za-z][\w.-]*))(?P<sep>=|\s+)(?P<value>{_QUOTED_VALUE})")
# NAME=value (environment-style or dotted config keys) inside free text.
_ASSIGN_IN_TEXT = re.compile(rf"(?<![\w.?&;/-])(?P<name>[A-Za-z_][\w.]*)=(?P<value>{_QUOTED_VALUE})")
# "NAME": value  /  'NAME': value  /  NAME: "value"  (JSON, Python dicts, YAML)
# NAME: value  (YAML, HTTP headers such as ``X-Api-Key: ...``): a plain value needs a blank after the colon.
_KEYED_IN_TEXT = re.compile(
    r"(?P<key>(?P<q>[\"'])(?P<qname>[A-Za-z_][\w.-]*)(?P=q)\s*:\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,}\]]+)"
    r"|(?P<ukey>(?<![\w.-])(?P<uname>[A-Za-z_][\w.-]*):\s*)(?P<uvalue>\"[^\"]*\"|'[^']*')"
    r"|(?P<pkey>(?<![\w.-])(?P<pname>[A-Za-z_][\w.-]*):[ \t]+)(?P<pvalue>[^\s,}\]\"']+)"
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
    r"|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|AIza[0-9A-Za-z_-]{30,}|npm_[A-Za-z0-9]{30,}"
    r"|op1\.[0-9a-f]{16,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
# A whole PEM private key block in one text, or its first line when the rest is cut off.
_PEM_BLOCK = re.compile(
    r"(?P<begin>-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY)-----)"
    r"(?:.*?(?P<end>-----END (?P=kind)-----)|.*)",
    re.DOTALL,
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
_BASE64_LINE = re.compile(r"^\s*[A-Za-z0-9+/=]{16,}\s*$")
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
    if match["pname"] is not None:
        return _redact_plain_keyed(match)
    if match["qname"] is not None:
        if not is_secret_name(match["qname"]):
            return match[0]
        return f"{match['key']}{_mask_quoted(match['value'])}"
    if not is_secret_name(match["uname"]):
        return match[0]
    return f"{match['ukey']}{_mask_quoted(match['uvalue'])}"


def _split_closers(value: str) -> tuple[str, str]:
    """Split closing brackets that end a value but were not opened in it (``abc)`` -> ``abc``, ``)``)."""
    body = value
    while body and body[-1] in ")]}>" and "([{<"[")]}>".index(body[-1])] not in body:
        body = body[:-1]
    return body, value[len(body):]


def _redact_auth_header(match: re.Match[str]) -> str:
    _, closers = _split_closers(match["value"])
    return f"{match['head']}{match['scheme'] or ''}{MASK}{closers}"


def _redact_plain_keyed(match: re.Match[str]) -> str:
    if not is_secret_name(match["pname"]):
        return match[0]
    body, closers = _split_closers(match["pvalue"])
    if not body:
        return match[0]
    return f"{match['pkey']}{MASK}{closers}"


def _redact_pem(match: re.Match[str]) -> str:
    end = match["end"] or ""
    return f"{match['begin']}{MASK}{end}"


def redact_text(text: str) -> str:
    """Hide secret values in free text such as a command line as one string.

    Args:
        text: Any text; ``None``-safe callers should pass ``""``.

    Returns:
        The text with every recognised secret value replaced by ``***``.
    """
    if not text:
        return text
    if "PRIVATE KEY-----" in text:
        text = _PEM_BLOCK.sub(_redact_pem, text)
    text = _AUTH_HEADER.sub(_redact_auth_header, text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _URL_USERINFO.sub(_redact_url_userinfo, text)
    text = _URL_QUERY_SECRET.sub(lambda m: f"{m['sep']}{m['name']}={MASK}", text)
    text = _FLAG_IN_TEXT.sub(_redact_flag, text)
    text = _ASSIGN_IN_TEXT.sub(_redact_assignment, text)
    text = _KEYED_IN_TEXT.sub(_redact_keyed, text)
    return _KNOWN_TOKENS.sub(MASK, text)


def redact_lines(lines: Iterable[str]) -> list[str]:
    """Redact log lines one by one, hiding a PEM private key spread over several lines.

    The lines between ``-----BEGIN ... PRIVATE KEY-----`` and its ``-----END``
    line become ``***``; so do key-looking lines just before an ``END`` line
    whose ``BEGIN`` was cut off (a log tail).

    Args:
        lines: Lines without their line ends.

    Returns:
        The redacted lines, as many as were given.
    """
    out: list[str] = []
    in_key = False
    for line in lines:
        if in_key:
            end = _PEM_END.search(line)
            in_key = end is None
            if end is None:
                out.append(MASK)
            else:
                out.append((MASK if end.start() else "") + redact_text(line[end.start() :]))
            continue
        begin = _PEM_BEGIN.search(line)
        if begin and not _PEM_END.search(line, begin.end()):
            in_key = True
            out.append(redact_text(line))  # keeps the BEGIN marker, hides what follows it
            continue
        if _PEM_END.search(line) and not _PEM_BEGIN.search(line):
            # The block's start was cut off: hide the key body above this line.
            index = len(out) - 1
            while index >= 0 and _BASE64_LINE.match(out[index]):
                out[index] = MASK
                index -= 1
        out.append(redact_text(line))
    return out


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
