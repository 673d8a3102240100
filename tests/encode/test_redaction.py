"""Redaction: realistic secrets are masked, ordinary prose/code is left alone, prefilter is safe."""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry_client.encode import redact as _redact
from telemetry_client.encode.redact import Redactor

# Token-shaped fakes are assembled at runtime so secret scanners do not flag this file.


def fake(prefix: str, n: int, alphabet: str = "aB3dE5fG7hJ9kLm") -> str:
    """``prefix`` followed by ``n`` characters cycled from ``alphabet``."""
    return prefix + (alphabet * (n // len(alphabet) + 1))[:n]


OPENAI = fake("sk-proj-", 48)
ANTHROPIC = fake("sk-ant-api03-", 40, "AbCdEf123456_GhIjKl7890-mn")
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9"
GOOGLE = fake("AIza", 35)
GROQ = fake("gsk_", 52)
HF = fake("hf_", 34)
GITHUB = fake("ghp_", 36)
GITHUB_PAT = fake("github_pat_", 82)
SLACK = fake("xoxb-", 30, "1234567890-abcdef")
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/Iz"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
SHA256 = "9f86d081884c7d659a2feaeb86ea4d2c6f1e4a1d9f0b7e2a3c5d6e7f8a9b0c1d"
UUID = "4f9c2a1e-8b7d-4c3a-9e2f-1a2b3c4d5e6f"
HUNTER = "hunter" + "2"

ENV_FILE = (
    "# local settings\n"
    f"OPENAI_API_KEY={OPENAI}\n"
    f"ANTHROPIC_API_KEY={ANTHROPIC}\n"
    f"AWS_ACCESS_KEY_ID={AWS_ID}\n"
    f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n"
    "AWS_REGION=eu-west-1\n"
)
PEM_DIFF = (
    "diff --git a/deploy/key.pem b/deploy/key.pem\n"
    "--- /dev/null\n+++ b/deploy/key.pem\n@@ -0,0 +1,4 @@\n"
    + "".join(f"+{line}\n" for line in PEM.splitlines())
    + " unchanged line\n"
)

# (text, the secret that must disappear, the marker that must appear)
POSITIVE_STRINGS = [
    (
        f'curl -s -H "Authorization: Bearer {OPENAI}" https://api.openai.com/v1/models',
        OPENAI,
        "bearer",
    ),
    (f"curl -H 'authorization: bearer abc123' {UUID}", "abc123", "bearer"),
    (f'{{"auth": "Bearer {JWT}"}}', JWT, "bearer"),
    (f'{{"id_token_hint": "{JWT}", "ok": true}}', JWT, "jwt"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "basic_auth"),
    (ENV_FILE, OPENAI, "openai_key"),
    (ENV_FILE, ANTHROPIC, "anthropic_key"),
    (ENV_FILE, AWS_ID, "aws_access_key_id"),
    (ENV_FILE, AWS_SECRET, "aws_secret_key"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "aws_secret_key"),
    (f'"SecretAccessKey": "{AWS_SECRET}"', AWS_SECRET, "aws_secret_key"),
    ("creds: ASIA" + "Y3FMGQEXAMPLE123 expires soon", "ASIAY3FMGQEXAMPLE123", "aws_access_key_id"),
    (PEM_DIFF, PEM_BODY.splitlines()[0], "private_key"),
    (f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}", PEM_BODY, "private_key"),
    (
        f"2024-05-01 12:00:01 INFO db connect host=db1 user=app password={HUNTER} ok",
        HUNTER,
        "password",
    ),
    (f"db:\n  passwd: {HUNTER}\n", HUNTER, "password"),
    (f"Server=db1;Uid=sa;Pwd={HUNTER};", HUNTER, "password"),
    (f"https://x.test/login?user=bob&password={HUNTER}&next=/", HUNTER, "password"),
    (f'body = "{{\\"password\\": \\"{HUNTER}\\"}}"', HUNTER, "password"),
    (f"GOOGLE_API_KEY={GOOGLE}", GOOGLE, "google_api_key"),
    (f"client = Groq(api_key='{GROQ}')", GROQ, "groq_key"),
    (f"huggingface-cli login --token {HF}", HF, "huggingface_token"),
    (f"git clone https://{GITHUB}@github.com/acme/app.git", GITHUB, "github_token"),
    (f"GH_TOKEN={GITHUB_PAT}", GITHUB_PAT, "github_token"),
    (f"SLACK_BOT_TOKEN={SLACK}", SLACK, "slack_token"),
    (f"DATABASE_URL=postgresql://app:{HUNTER}@db:5432/x", HUNTER, "password"),
    (f"broker: amqp://guest:{HUNTER}-q@rabbit:5672/%2F", f"{HUNTER}-q", "password"),
    (f"cache at redis://:{HUNTER}@cache.internal:6379/0 is down", HUNTER, "password"),
]

NEGATIVE_STRINGS = [
    "We should build a password reset flow that emails a one-time link.",
    "Type it into the password field, then press Enter.",
    "tokens = tokenize(text)\nprint(len(tokens), tokens[:5])",
    "def login(username: str, password: str) -> bool:\n    if not password: return False",
    "password = getpass.getpass('Password: ')",
    "conn = connect(password=os.environ['DB_PASSWORD'], user=user)",
    "const pwd = req.body.password; // never log it",
    "The task-runner skeleton spawns one worker per disk-backed queue.",
    "The bearer of this letter is a friend; see bearer tokens in RFC 6750.",
    'headers = {"Authorization": f"Bearer {api_key}"}',
    'curl -H "Authorization: Bearer $OPENAI_API_KEY" https://api.openai.com',
    "max_tokens=1024 temperature=0.2 top_p=1",
    "cd $(pwd) && ls -la",
    "OLDPWD=/home/dev PWD=/home/dev/app SHLVL=1",
    "userid = passwd = acct = ''",
    "self.password = config['password']",
    "'HAVE_STRUCT_PASSWD_PW_PASSWD': 1,",
    "lib/distutils/config.py:19:password:%s",
    "    password:  The password for the authentication.",
    "export DB_PASSWORD=${DB_PASSWORD}",
    SHA256,
    UUID,
    f"commit {SHA256[:40]} (session {UUID})",
]

USAGE_EVENT = {
    "model": "gpt-4o-mini",
    "usage": {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290},
    "max_tokens": 2048,
    "token_count": 7,
    "tokens": 3,
    "digest": SHA256,
    "session": UUID,
    "messages": [{"role": "user", "content": "Summarise the design doc in three bullets."}],
}


def test_header_dict_masks_secret_headers() -> None:
    """Secret HTTP headers are masked whole whatever their case or separators; others stay."""
    headers = {
        "X-Api-Key": OPENAI,
        "Authorization": f"Bearer {JWT}",
        "x-auth-token": "t0k3n",
        "Set-Cookie": "sid=abc; HttpOnly",
        "Proxy-Authorization": "Basic dXNlcjpwYXNz",
        "Content-Type": "application/json",
        "X-Request-Id": UUID,
    }
    out, n = Redactor().redact({"request": {"headers": headers}})
    assert n == 5
    assert out == {
        "request": {
            "headers": {
                "X-Api-Key": "[REDACTED]",
                "Authorization": "[REDACTED]",
                "x-auth-token": "[REDACTED]",
                "Set-Cookie": "[REDACTED]",
                "Proxy-Authorization": "[REDACTED]",
                "Content-Type": "application/json",
                "X-Request-Id": UUID,
            }
        }
    }


@pytest.mark.parametrize(
    "key",
    [
        "Authorization",
        "PROXY-AUTHORIZATION",
        "X-Api-Key",
        "x_api_key",
        "api key",
        "apiKey",
        "client.secret",
        "OPENAI_API_KEY",
        "github_token",
        "accessToken",
        "refresh-token",
        "Set-Cookie",
        "private_key",
        "db_password",
        "passwd",
        "aws_secret_access_key",
        "SecretAccessKey",
    ],
)
def test_secret_key_names(key: str) -> None:
    """Secret key names are recognised after case, separator and camelCase normalisation."""
    assert Redactor().is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "max_tokens",
        "tokens",
        "token_count",
        "maxTokens",
        "Content-Type",
        "tokenizer",
        "keyboard",
        "secretary",
        "password_hash",
        "author",
    ],
)
def test_non_secret_key_names(key: str) -> None:
    """Usage counters and look-alike names are not secret keys."""
    assert not Redactor().is_secret_key(key)


@pytest.mark.parametrize(("text", "secret", "kind"), POSITIVE_STRINGS)
def test_secret_values_in_strings_are_masked(text: str, secret: str, kind: str) -> None:
    """Each realistic secret disappears from the string and its kind's marker appears."""
    out, n = Redactor().redact_str(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert n >= 1


def test_curl_bearer_keeps_scheme_and_url() -> None:
    """Only the token after ``Bearer`` is masked in a curl command line."""
    cmd = f'curl -H "Authorization: Bearer {OPENAI}" -H "Accept: */*" https://api.x.test/v1'
    out, n = Redactor().redact_str(cmd)
    assert (out, n) == (
        'curl -H "Authorization: Bearer [REDACTED:bearer]" -H "Accept: */*" https://api.x.test/v1',
        1,
    )


def test_env_file_keeps_names_and_harmless_lines() -> None:
    """A ``.env`` file keeps variable names and non-secret lines; the four secrets go."""
    out, n = Redactor().redact_str(ENV_FILE)
    assert n == 4
    assert out == (
        "# local settings\n"
        "OPENAI_API_KEY=[REDACTED:openai_key]\n"
        "ANTHROPIC_API_KEY=[REDACTED:anthropic_key]\n"
        "AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key_id]\n"
        "AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_key]\n"
        "AWS_REGION=eu-west-1\n"
    )


def test_pem_block_in_diff_is_masked_whole() -> None:
    """The whole PEM block in a diff is replaced; the diff header and later lines survive."""
    out, n = Redactor().redact_str(PEM_DIFF)
    assert n == 1
    assert out.startswith("diff --git a/deploy/key.pem b/deploy/key.pem\n")
    assert out.endswith("+[REDACTED:private_key]\n unchanged line\n")


def test_password_in_log_line_keeps_key() -> None:
    """``password=...`` keeps the key name and masks only the value."""
    line = f"INFO login user=bob password={HUNTER} ip=10.0.0.1"
    out, n = Redactor().redact_str(line)
    assert (out, n) == ("INFO login user=bob password=[REDACTED:password] ip=10.0.0.1", 1)


def test_jwt_in_json_body() -> None:
    """A JWT inside a JSON request body string is masked; the rest of the body stays."""
    body = orjson.dumps({"grant_type": "urn:jwt-bearer", "assertion": JWT}).decode()
    out, n = Redactor().redact({"tool": "http_post", "args": {"body": body}})
    assert n == 1
    assert out == {
        "tool": "http_post",
        "args": {"body": '{"grant_type":"urn:jwt-bearer","assertion":"[REDACTED:jwt]"}'},
    }


def test_nested_tool_args() -> None:
    """Secrets deep in tool arguments (lists, tuples, dicts) are found; shapes are kept."""
    event = {
        "tool_calls": [
            {
                "name": "run_shell",
                "args": {"cmd": f"export OPENAI_API_KEY={OPENAI}", "env": {"HF_TOKEN": HF}},
            },
            {"name": "write_file", "args": ("config/.env", f"GROQ={GROQ}\nDEBUG=1\n")},
        ],
        "usage": {"prompt_tokens": 10},
    }
    out, n = Redactor().redact(event)
    assert n == 3
    assert out == {
        "tool_calls": [
            {
                "name": "run_shell",
                "args": {
                    "cmd": "export OPENAI_API_KEY=[REDACTED:openai_key]",
                    "env": {"HF_TOKEN": "[REDACTED]"},
                },
            },
            {"name": "write_file", "args": ("config/.env", "GROQ=[REDACTED:groq_key]\nDEBUG=1\n")},
        ],
        "usage": {"prompt_tokens": 10},
    }


def test_secret_key_masks_any_value_type() -> None:
    """Values under secret keys become ``"[REDACTED]"`` whatever their type."""
    data = {"token": 12345, "api_key": ["a", "b"], "secret": {"nested": True}, "password": None}
    out, n = Redactor().redact(data)
    assert n == 4
    assert out == dict.fromkeys(data, "[REDACTED]")


@pytest.mark.parametrize("text", NEGATIVE_STRINGS)
def test_ordinary_text_unchanged(text: str) -> None:
    """Prose and code that merely mention passwords or tokens are not touched."""
    assert Redactor().redact_str(text) == (text, 0)


def test_ordinary_event_passes_prefilter() -> None:
    """A usage/hash/uuid event is rejected by the prefilter and unchanged by ``redact``."""
    r = Redactor()
    assert not r.maybe_secret(orjson.dumps(USAGE_EVENT))
    assert r.redact(USAGE_EVENT) == (USAGE_EVENT, 0)


def test_prefilter_superset_on_positive_samples() -> None:
    """Every sample that redaction changes is flagged by ``maybe_secret`` on its orjson bytes."""
    r = Redactor()
    samples: list[object] = [text for text, _, _ in POSITIVE_STRINGS]
    samples += [{"outer": [{key: "x"}]} for key in ("X-Api-Key", "Cookie", "clientSecret")]
    samples += [{"a": {"b": [1, {"Authorization": 1}]}}, {"db_password": ""}, {"ID-TOKEN": 0}]
    for sample in samples:
        out, n = r.redact(sample)
        assert n >= 1
        assert out != sample
        assert r.maybe_secret(orjson.dumps(sample)), sample
        assert r.maybe_secret(orjson.dumps({"data": sample}, option=orjson.OPT_INDENT_2))


@settings(max_examples=60, database=None, deadline=None)
@given(data=st.data())
def test_prefilter_superset_property(data: st.DataObject) -> None:
    """For generated text matching any precise rule, both prefilters say "maybe"."""
    kind, _, folded, source = data.draw(st.sampled_from(_redact._RULES))
    pattern = re.compile(source, re.ASCII | (re.IGNORECASE if folded else 0))
    text = data.draw(st.from_regex(pattern), label=kind)
    r = Redactor()
    assert r.maybe_secret(orjson.dumps(text))
    assert r.maybe_secret(orjson.dumps({"k": [text]}))
    assert r.redact_str(text)[1] >= 1


def test_rule_needles_covered_by_prefilter() -> None:
    """Every per-rule needle contains a prefilter needle, so the two tables cannot drift apart."""
    prefilter = [n for ns in _redact._NEEDLES.values() for n in ns] + [_redact._URL_NEEDLE]
    for _, needles, _, _ in _redact._RULES:
        for needle in needles:
            assert needle == needle.lower()
            assert any(p in needle for p in prefilter), needle


def test_case_insensitive_rules_are_lowercase() -> None:
    """Case-insensitive rules hold no uppercase literal, so they can run on ``value.lower()``."""
    for kind, _, folded, source in _redact._RULES:
        if folded:
            assert not re.search(r"(?<!\\)[A-Z]", source.replace("(?P<", "")), kind


def test_mixed_case_and_non_ascii_text() -> None:
    """Odd-case keywords match, also in non-ASCII text where the case-folding fallback runs."""
    for prefix in ("", "Пароль / Kennwort ü: "):
        text = f"{prefix}PassWord={HUNTER}; AUTHORIZATION: BEARER abc; x-Bearer {OPENAI}"
        out, n = Redactor().redact_str(text)
        assert n == 3
        assert out == (
            f"{prefix}PassWord=[REDACTED:password]; AUTHORIZATION: BEARER [REDACTED:bearer];"
            " x-Bearer [REDACTED:bearer]"
        )


def test_several_secrets_in_one_string() -> None:
    """All secrets in one string are masked, each counted once, header tokens as ``bearer``."""
    text = f"Authorization: Bearer {JWT}\nkey={GOOGLE} user=x password={HUNTER}\n{PEM}\nend"
    out, n = Redactor().redact_str(text)
    assert n == 4
    assert out == (
        "Authorization: Bearer [REDACTED:bearer]\nkey=[REDACTED:google_api_key] user=x"
        " password=[REDACTED:password]\n[REDACTED:private_key]\nend"
    )


_NEEDLE_CHARS = "".join(sorted({c for ns in _redact._NEEDLES.values() for n in ns for c in n}))


@settings(max_examples=300, database=None, deadline=None)
@given(st.text(alphabet=_NEEDLE_CHARS + "AZ\n\\", max_size=40))
def test_gate_regexes_equal_substring_checks(text: str) -> None:
    """The anchored group regexes give exactly ``any(needle in text)``, on str and bytes."""
    needles = [n for ns in _redact._NEEDLES.values() for n in ns]
    expected = any(n in text for n in needles)
    assert any(gate(text) for gate in _redact._STR_GATES) == expected
    assert any(gate(text.encode()) for gate in _redact._BYTES_GATES) == expected


def fallback_redactor(**kwargs: object) -> Redactor:
    """A Redactor built while ``import ahocorasick_rs`` fails, so it uses the regex gates."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "ahocorasick_rs", None)  # None in sys.modules: ImportError
        return Redactor(**kwargs)  # type: ignore[arg-type]


_EXTRA_KEYS = ["session-cookie-value", "X_Tenant_Pin", "myVaultRef", "Geheimer-Schlüssel", 'P"in']
# (automaton, fallback) pairs: built-in needles only, and with the extra keys' needles added.
_PAIRS = [
    (Redactor(), fallback_redactor()),
    (Redactor(extra_keys=_EXTRA_KEYS), fallback_redactor(extra_keys=_EXTRA_KEYS)),
]
_ALL_NEEDLES = sorted({*_redact._BYTES_NEEDLES, *_PAIRS[1][0]._key_needles})


def test_prefilter_pairs_use_both_implementations() -> None:
    """The equivalence tests below really compare the automaton with the regex-gate fallback."""
    for automaton, fallback in _PAIRS:
        assert automaton._scan is not None
        assert fallback._scan is None
    assert _PAIRS[1][0]._key_needles == _PAIRS[1][1]._key_needles
    assert b"myvaultref" in _ALL_NEEDLES
    assert "schlüssel".encode() in _ALL_NEEDLES


def assert_same_verdict(serialized: bytes) -> None:
    """Automaton and fallback agree on ``serialized`` (so no false negative either way)."""
    for automaton, fallback in _PAIRS:
        assert automaton.maybe_secret(serialized) == fallback.maybe_secret(serialized), serialized


_NEAR_MISS = st.text(alphabet=_NEEDLE_CHARS + _NEEDLE_CHARS.upper() + 'ÜüLNTPRV\n\\"é', max_size=60)


@settings(max_examples=400, database=None, deadline=None)
@given(
    blob=st.binary(max_size=200),
    text=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200),
    near=_NEAR_MISS,
)
def test_automaton_equals_fallback_on_arbitrary_input(blob: bytes, text: str, near: str) -> None:
    """On arbitrary bytes, text and needle-alphabet soup, both prefilters give the same answer."""
    assert_same_verdict(blob)
    for value in (text, near):
        assert_same_verdict(value.encode())
        assert_same_verdict(orjson.dumps({value: [value]}))


def ascii_case(needle: bytes, upper: list[bool]) -> bytes:
    """``needle`` with the ASCII letters at ``upper`` positions uppercased."""
    return bytes(
        c - 32 if flag and 0x61 <= c <= 0x7A else c for c, flag in zip(needle, upper, strict=False)
    )


@settings(max_examples=400, database=None, deadline=None)
@given(
    needle=st.sampled_from(_ALL_NEEDLES),
    upper=st.lists(st.booleans(), min_size=16, max_size=16),
    before=st.binary(max_size=80) | _NEAR_MISS.map(str.encode),
    after=st.binary(max_size=80) | _NEAR_MISS.map(str.encode),
)
def test_embedded_needle_in_any_case_is_flagged(
    needle: bytes, upper: list[bool], before: bytes, after: bytes
) -> None:
    """Every needle, in any ASCII case, anywhere in the bytes, is flagged by both prefilters."""
    haystack = before + ascii_case(needle, upper + [False] * len(needle)) + after
    automaton, fallback = _PAIRS[1]
    assert automaton.maybe_secret(haystack), haystack
    assert fallback.maybe_secret(haystack), haystack
    if needle in _redact._BYTES_NEEDLES:
        assert _PAIRS[0][0].maybe_secret(haystack), haystack
        assert _PAIRS[0][1].maybe_secret(haystack), haystack


def test_automaton_equals_fallback_on_corpus() -> None:
    """On every sample string and event in this file, both prefilters give the same answer."""
    samples: list[object] = [text for text, _, _ in POSITIVE_STRINGS]
    samples += [*NEGATIVE_STRINGS, USAGE_EVENT, ENV_FILE, PEM_DIFF, {"headers": {"X-Api-Key": 1}}]
    samples += [{key: 1} for key in [*_EXTRA_KEYS, "xTenantPin", "MYVAULTREF", "vault_ref"]]
    for sample in samples:
        assert_same_verdict(orjson.dumps(sample))
        assert_same_verdict(orjson.dumps({"data": sample}, option=orjson.OPT_INDENT_2))
    assert not _PAIRS[0][0].maybe_secret(orjson.dumps(USAGE_EVENT))
    assert _PAIRS[0][0].maybe_secret(orjson.dumps(POSITIVE_STRINGS[0][0]))


def test_fallback_without_ahocorasick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ahocorasick_rs the Redactor uses the regex gates and keeps the contract."""
    monkeypatch.setitem(sys.modules, "ahocorasick_rs", None)
    r = Redactor(extra_keys=["myVaultRef"])
    assert r._scan is None
    assert not r.maybe_secret(orjson.dumps(USAGE_EVENT))
    assert r.maybe_secret(orjson.dumps({"x": {"MYVAULTREF": 1}}))
    for text, secret, _ in POSITIVE_STRINGS:
        assert r.maybe_secret(orjson.dumps({"a": [text]}))
        assert secret not in r.redact_str(text)[0]
    assert r.redact({"Authorization": "x"}) == ({"Authorization": "[REDACTED]"}, 1)


def test_automaton_only_built_when_used() -> None:
    """A disabled redactor, or one that always redacts, builds no automaton."""
    assert Redactor(enabled=False)._scan is None
    assert Redactor(extra_patterns=["x"])._scan is None
    assert Redactor(callback=lambda _k, _v: None)._scan is None
    assert Redactor(extra_keys=["--"])._scan is None  # no name segment: always True


_BASE_KEYS = [*sorted(_redact._SECRET_KEYS), "db_token", "my_secret", "user_password", "x_apikey"]


@settings(max_examples=200, database=None, deadline=None)
@given(
    base=st.sampled_from(_BASE_KEYS),
    seps=st.lists(st.sampled_from("_- ."), min_size=8, max_size=8),
    case=st.sampled_from([str.lower, str.upper, str.title, str.capitalize]),
)
def test_secret_key_variants_reach_prefilter(
    base: str, seps: list[str], case: Callable[[str], str]
) -> None:
    """Any spelling of a secret key name, nested anywhere, makes ``maybe_secret`` True."""
    parts = base.split("_")
    key = parts[0] + "".join(sep + part for sep, part in zip(seps, parts[1:], strict=False))
    key = case(key)
    r = Redactor()
    assert r.is_secret_key(key), key
    assert r.maybe_secret(orjson.dumps({"a": [{"b": {key: 1}}]}))


def test_input_never_mutated() -> None:
    """``redact`` builds new containers and leaves the input exactly as it was."""
    event = {"headers": {"Authorization": "x"}, "args": [f"password={HUNTER}", ("t", {"k": 1})]}
    before = copy.deepcopy(event)
    out, n = Redactor().redact(event)
    assert n == 2
    assert event == before
    assert out is not event
    assert isinstance(out, dict)
    assert out["args"] is not event["args"]
    assert out["args"][1] == ("t", {"k": 1})
    assert out["args"][1][1] is not event["args"][1][1]  # type: ignore[index]


def test_redaction_is_idempotent() -> None:
    """Redacting already-redacted output changes nothing more."""
    r = Redactor()
    for text, _, _ in POSITIVE_STRINGS:
        once, _ = r.redact_str(text)
        assert r.redact_str(once) == (once, 0)
    masked, _ = r.redact({"token": "x", "a": f"Bearer {OPENAI}"})
    assert r.redact(masked) == (masked, 0)


def test_other_types_returned_as_is() -> None:
    """Numbers, None, bytes and unknown objects are neither walked nor copied."""
    marker = object()
    blob = b"password=" + HUNTER.encode()
    out, n = Redactor().redact({"n": 1.5, "none": None, "blob": blob, "obj": marker, "flag": True})
    assert n == 0
    assert isinstance(out, dict)
    assert out["obj"] is marker
    assert out["blob"] is blob


def test_disabled_changes_nothing() -> None:
    """A disabled redactor never flags, never masks, and returns the input itself."""
    r = Redactor(enabled=False, extra_patterns=["x"], callback=lambda _k, _v: "gone")
    event = {"Authorization": f"Bearer {OPENAI}", "text": ENV_FILE}
    assert not r.maybe_secret(orjson.dumps(event))
    assert not r.is_secret_key("Authorization")
    assert r.redact(event) == (event, 0)
    assert r.redact(event)[0] is event
    assert r.redact_str(ENV_FILE) == (ENV_FILE, 0)


def test_extra_keys() -> None:
    """User key names are matched after the same normalisation and seen by the prefilter."""
    r = Redactor(extra_keys=["session-cookie-value", "X_Tenant_Pin", "myVaultRef"])
    assert r.is_secret_key("Session.Cookie.Value")
    assert r.is_secret_key("xTenantPin")
    assert r.is_secret_key("my-vault-ref")
    assert r.is_secret_key("MYVAULTREF")
    assert r.maybe_secret(orjson.dumps({"x": {"MYVAULTREF": 1}}))
    assert not r.is_secret_key("vault_ref")
    event = {"a": [{"xTenantPin": 1234}], "b": "fine"}
    assert r.maybe_secret(orjson.dumps(event))
    assert r.redact(event) == ({"a": [{"xTenantPin": "[REDACTED]"}], "b": "fine"}, 1)
    assert not r.maybe_secret(orjson.dumps(USAGE_EVENT))


def test_extra_patterns() -> None:
    """User regexes mask their matches as ``custom`` and force the prefilter on."""
    r = Redactor(extra_patterns=[r"\bACME-\d{6}\b", r"internal\.corp"])
    assert r.maybe_secret(orjson.dumps(USAGE_EVENT))
    out, n = r.redact_str("ticket ACME-123456 on wiki.internal.corp")
    assert (out, n) == ("ticket [REDACTED:custom] on wiki.[REDACTED:custom]", 2)


def test_callback_runs_last_with_key() -> None:
    """The callback sees the enclosing key and the already-redacted value; None keeps it."""
    seen: list[tuple[str, str]] = []

    def callback(key: str, value: str) -> str | None:
        seen.append((key, value))
        return value.replace("alice", "[user]") if "alice" in value else None

    r = Redactor(callback=callback)
    assert r.maybe_secret(orjson.dumps(USAGE_EVENT))
    out, n = r.redact({"who": "alice", "items": [f"alice password={HUNTER}"], "ok": "bob"})
    assert out == {"who": "[user]", "items": ["[user] password=[REDACTED:password]"], "ok": "bob"}
    assert n == 3
    assert ("items", "alice password=[REDACTED:password]") in seen
    assert r.redact_str("alice") == ("[user]", 1)


def test_callback_failure_fails_closed() -> None:
    """A raising callback replaces the string instead of leaking it or raising."""

    def callback(key: str, value: str) -> str | None:
        raise RuntimeError(value)

    out, n = Redactor(callback=callback).redact({"text": "hello"})
    assert (out, n) == ({"text": "[REDACTED:callback_error]"}, 1)


def test_depth_is_bounded() -> None:
    """Containers nested deeper than 64 levels are masked, not recursed into."""
    deep: object = "leaf"
    for _ in range(200):
        deep = [deep]
    out, n = Redactor().redact(deep)
    assert n == 1
    for _ in range(_redact.MAX_DEPTH + 1):
        assert isinstance(out, list)
        out = out[0]
    assert out == "[REDACTED:too_deep]"
    ok: object = "leaf"
    for _ in range(_redact.MAX_DEPTH + 1):
        ok = [ok]
    assert Redactor().redact(ok) == (ok, 0)


def test_key_cache_is_bounded() -> None:
    """The key-name cache never grows past its bound and stays correct after clearing."""
    r = Redactor()
    for i in range(10_000):
        r.is_secret_key(f"field_{i}")
    assert len(r._key_cache) <= _redact._KEY_CACHE_MAX
    assert r.is_secret_key("Authorization")
    assert not r.is_secret_key("prompt_tokens")


# --- URL credentials (scheme://user:password@host) -----------------------------------------

URL_CREDENTIALS = [
    (
        f"https://bob:{HUNTER}@example.com/path?q=1",
        "https://bob:[REDACTED:password]@example.com/path?q=1",
    ),
    (f"http://admin:{HUNTER}@10.0.0.5:8080/", "http://admin:[REDACTED:password]@10.0.0.5:8080/"),
    ("postgresql://app:Sup3r-S3cret@db:5432/x", "postgresql://app:[REDACTED:password]@db:5432/x"),
    (f"redis://:{HUNTER}@cache:6379/0", "redis://:[REDACTED:password]@cache:6379/0"),
    ("amqp://guest:guest@rabbit:5672/%2F", "amqp://guest:[REDACTED:password]@rabbit:5672/%2F"),
    ("HTTPS://Bob:Pw1@Example.COM", "HTTPS://Bob:[REDACTED:password]@Example.COM"),
    (  # percent-encoded '@' and ':' inside the password
        "mysql://root:p%40ss%3Aw0rd@localhost/db",
        "mysql://root:[REDACTED:password]@localhost/db",
    ),
    (  # raw '@' and ':' inside the password: the host follows the last '@' of the authority
        "mongodb+srv://u:p@ss:w@cluster0.x.net/?retryWrites=true",
        "mongodb+srv://u:[REDACTED:password]@cluster0.x.net/?retryWrites=true",
    ),
    (  # an e-mail address as the user name
        f"ftp://bob@corp.example:{HUNTER}@ftp.example.com/pub",
        "ftp://bob@corp.example:[REDACTED:password]@ftp.example.com/pub",
    ),
    (
        f"2024-05-01 ERROR could not connect to postgres://app:{HUNTER}@db.internal/app (timeout)",
        "2024-05-01 ERROR could not connect to postgres://app:[REDACTED:password]@db.internal/app"
        " (timeout)",
    ),
    (
        f"BROKERS=amqp://a:x1@h1,amqp://b:{HUNTER}@h2",
        "BROKERS=amqp://a:[REDACTED:password]@h1,amqp://b:[REDACTED:password]@h2",
    ),
    (
        f'{{"url": "redis://:{HUNTER}@h:6379", "next": "https://ok.test/@me"}}',
        '{"url": "redis://:[REDACTED:password]@h:6379", "next": "https://ok.test/@me"}',
    ),
    (
        f'cfg = {{\\"dsn\\": \\"postgresql://app:{HUNTER}@db/x\\"}}',
        'cfg = {\\"dsn\\": \\"postgresql://app:[REDACTED:password]@db/x\\"}',
    ),
]

URLS_WITHOUT_PASSWORD = [
    "https://user@example.com/path",
    "ssh://git@github.com:22/acme/app.git",
    "https://user:@example.com/",  # empty password: nothing to hide
    "https://medium.com/@alice/post-1",  # '@' in the path
    "https://example.com/search?q=a:b@c.d&x=1",  # '@' in the query
    "https://example.com:8443/users/bob:admin@corp",
    "http://localhost:8080?next=bob@example.com",
    "http://localhost:8080#user:pw@frag",
    "http://[2001:db8::1]:8080/path and http://[::1]/",
    'links = ["http://a.test", "mailto:x@y.z"]',
    "see https://example.com: write to admin@example.com",
    "contact bob@example.com or alice.smith+tag@mail.example.org",
    "mailto:bob@example.com?subject=hi",
    "git@github.com:acme/app.git",
]


@pytest.mark.parametrize(("text", "expected"), URL_CREDENTIALS)
def test_url_password_is_masked(text: str, expected: str) -> None:
    """Only the password of ``scheme://user:password@host`` is masked; scheme, user, host stay."""
    out, n = Redactor().redact_str(text)
    assert out == expected
    assert n == expected.count("[REDACTED:password]")


@pytest.mark.parametrize("text", URLS_WITHOUT_PASSWORD)
def test_urls_without_password_and_emails_unchanged(text: str) -> None:
    """A user without password, '@' in a path, query or fragment, and e-mails stay as they are."""
    assert Redactor().redact_str(text) == (text, 0)


def test_url_password_masked_in_event_and_flagged_by_both_prefilters() -> None:
    """A DSN deep in an event is flagged by both prefilters and masked by ``redact``."""
    event = {"tool": "run", "args": {"env": {"DATABASE_URL": f"postgresql://app:{HUNTER}@db/x"}}}
    body = orjson.dumps(event)
    for automaton, fallback in _PAIRS:
        assert automaton.maybe_secret(body)
        assert fallback.maybe_secret(body)
    out, n = Redactor().redact(event)
    assert n == 1
    assert out == {
        "tool": "run",
        "args": {"env": {"DATABASE_URL": "postgresql://app:[REDACTED:password]@db/x"}},
    }


def test_urls_without_password_are_not_flagged() -> None:
    """URLs without credentials and e-mails do not trip the prefilter (either implementation)."""
    event = {"links": URLS_WITHOUT_PASSWORD, "body": "See https://docs.test/a?b=c and x@y.z"}
    body = orjson.dumps(event)
    for automaton, fallback in _PAIRS:
        assert not automaton.maybe_secret(body)
        assert not fallback.maybe_secret(body)


_URL_SOUP = st.text(alphabet=":/@?#ab \\\"'\n\x01é[]", max_size=40)


@settings(max_examples=400, database=None, deadline=None)
@given(text=_URL_SOUP, prefix=st.sampled_from(["", "x://", "http://u:", "redis://:"]))
def test_url_prefilter_is_a_superset_and_implementations_agree(text: str, prefix: str) -> None:
    """On URL-shaped soup, a string redaction would change is flagged, by both implementations."""
    value = prefix + text
    for serialized in (orjson.dumps(value), orjson.dumps({"k": [value]}), value.encode()):
        assert_same_verdict(serialized)
    if Redactor().redact_str(value)[1]:
        for automaton, fallback in _PAIRS:
            assert automaton.maybe_secret(orjson.dumps({"k": [value]})), value
            assert fallback.maybe_secret(orjson.dumps({"k": [value]})), value


def test_url_with_token_user_and_password_masks_both_once() -> None:
    """A token as the user is masked by its own rule, the password after it by the URL rule."""
    out, n = Redactor().redact_str(f"https://{GITHUB}:{HUNTER}@github.com/acme/app.git")
    assert (out, n) == (
        "https://[REDACTED:github_token]:[REDACTED:password]@github.com/acme/app.git",
        2,
    )
    out, n = Redactor().redact_str(f"https://oauth2:{GITHUB}@gitlab.example.com/x.git")
    assert (out, n) == ("https://oauth2:[REDACTED:github_token]@gitlab.example.com/x.git", 1)
    assert Redactor().redact_str(out) == (out, 0)


def test_no_builtin_needle_can_hide_inside_the_url_needle() -> None:
    """No built-in needle starts with '/' (it could overlap "://" and go unreported)."""
    assert not [n for n in _redact._BYTES_NEEDLES if n.startswith((b"/", b"//"))]


def test_user_key_starting_with_slash_is_not_hidden_by_url_needle() -> None:
    """A user key segment starting with '/' is still found right after ':' (automaton==fallback)."""
    keys = ["pin_//x"]
    automaton, fallback = Redactor(extra_keys=keys), fallback_redactor(extra_keys=keys)
    assert automaton._scan is not None
    for body in (b'{"k":"u://x"}', b'{"pin_//x":1}', b'{"k":"see http://x.test/"}'):
        assert automaton.maybe_secret(body) == fallback.maybe_secret(body), body
    assert automaton.maybe_secret(b'{"k":"u://x"}')
