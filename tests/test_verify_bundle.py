"""tools/verify_bundle.py: a third party's offline check of an evidence bundle.

The tool runs as a separate process, isolated (`python -I`), from a temporary
directory holding nothing but its own copy, with the project's packages made
unimportable: it must stand alone. A valid bundle passes; one byte changed
anywhere that matters, or the wrong key, fails and names what failed.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.conftest import make_test_app
from tests.tsa_server import running_tsa
from tests.twilio_helpers import send_text

TOOL = Path(__file__).resolve().parent.parent / "tools" / "verify_bundle.py"
PHONE = "+14155550100"
# Run the tool with the project unimportable, so an `import app` in it would fail here.
LAUNCHER = (
    "import runpy, sys; sys.modules['app'] = None; sys.modules['tests'] = None; "
    "sys.argv = ['verify_bundle.py', *sys.argv[1:]]; "
    "runpy.run_path('verify_bundle.py', run_name='__main__')"
)


@pytest.fixture(scope="module")
def tsa():
    with running_tsa() as authority:
        yield authority


@pytest.fixture
def app(database_url, tmp_path, tsa):
    """The app, with checkpoints timestamped by a TSA on loopback."""
    application = make_test_app(database_url, tmp_path, ledger_tsa_url=tsa.url)
    yield application
    application.extensions["db"].dispose()


def make_bundle(app, tmp_path: Path) -> tuple[Path, Path]:
    """An evidence bundle (with an RFC 3161 timestamp) and the ledger's public key, as files."""
    client = app.test_client()
    for phone, body in [
        (PHONE, "JOIN"),
        ("+14155550101", "JOIN"),
        (PHONE, "YES"),
        (PHONE, 'Ünïcode, "quotes" \\ and\nnewlines'),
        (PHONE, "STOP"),
    ]:
        assert send_text(client, phone, body)[0].status_code == 200
    runner = app.test_cli_runner()
    bundle_path = tmp_path / "bundle.json"
    result = runner.invoke(args=["evidence", PHONE, "--output", str(bundle_path)])
    assert result.exit_code == 0, result.output
    key_path = tmp_path / "ledger-key.pem"
    key_path.write_text(runner.invoke(args=["ledger", "public-key"]).stdout)
    return bundle_path, key_path


@pytest.fixture
def bundle_files(app, tmp_path):
    """A bundle made on each backend."""
    return make_bundle(app, tmp_path)


@pytest.fixture(scope="module")
def reference_bundle(sqlite_template, tmp_path_factory, tsa):
    """One bundle for the many tamperings (they do not depend on the database)."""
    folder = tmp_path_factory.mktemp("reference-bundle")
    shutil.copyfile(sqlite_template, folder / "db.sqlite3")
    application = make_test_app(
        f"sqlite:///{folder / 'db.sqlite3'}", folder, ledger_tsa_url=tsa.url
    )
    try:
        yield make_bundle(application, folder)
    finally:
        application.extensions["db"].dispose()


def run_tool(bundle: dict | Path, key: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    workdir = tmp_path / "third-party"
    workdir.mkdir(exist_ok=True)
    shutil.copy(TOOL, workdir / "verify_bundle.py")
    if isinstance(bundle, dict):
        path = workdir / "bundle.json"
        path.write_text(json.dumps(bundle, ensure_ascii=False), encoding="utf-8")
    else:
        path = bundle
    return subprocess.run(
        [sys.executable, "-I", "-c", LAUNCHER, str(path), "--key", str(key)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_tool_imports_only_the_standard_library_and_cryptography():
    tree = ast.parse(TOOL.read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - {"__future__", "cryptography"} <= set(sys.stdlib_module_names)


def test_a_valid_bundle_passes(bundle_files, tmp_path):
    bundle_path, key_path = bundle_files
    result = run_tool(bundle_path, key_path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: all 4 events of +14155550100 are proven included" in result.stdout
    assert "RFC 3161 time" in result.stdout
    bundle = load(bundle_path)
    assert all(event["anchor"] for event in bundle["events"])


def test_the_wrong_key_fails(bundle_files, tmp_path):
    bundle_path, _ = bundle_files
    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    result = run_tool(bundle_path, other, tmp_path)
    assert result.returncode == 1
    assert "FAILED: checkpoint 0:" in result.stdout


def flip(text: str, position: int = 10) -> str:
    """`text` with one character changed (hex stays hex, base64 stays base64)."""
    old = text[position]
    new = "0" if old != "0" else "1"
    return text[:position] + new + text[position + 1 :]


def change_note_size(bundle):
    note = bundle["transparency"]["checkpoints"][0]["note"]
    lines = note.split("\n")
    lines[1] = str(int(lines[1]) + 1)
    bundle["transparency"]["checkpoints"][0]["note"] = "\n".join(lines)


def change_signature(bundle):
    entry = bundle["transparency"]["checkpoints"][0]
    text, signatures = entry["note"].split("\n\n")
    first, *rest = signatures.split("\n")
    name, signature = first.rsplit(" ", 1)
    entry["note"] = text + "\n\n" + "\n".join([f"{name} {flip(signature, 20)}", *rest])


def change_timestamp(bundle):
    import base64

    entry = bundle["transparency"]["checkpoints"][0]
    raw = bytearray(base64.b64decode(entry["rfc3161_response_base64"]))
    digest_at = raw.find(bytes.fromhex("0420")) + 2  # the imprint's OCTET STRING
    raw[digest_at] ^= 1
    entry["rfc3161_response_base64"] = base64.b64encode(bytes(raw)).decode()


MUTATIONS = {
    # an event field, as hashed, and as shown to the reader
    "hashed intent": lambda b: b["events"][3]["ledger_fields"].update(intent="other"),
    "shown intent": lambda b: b["events"][3].update(intent="other"),
    "shown status": lambda b: b["events"][3].update(status_after="active"),
    "hashed time": lambda b: b["events"][1]["ledger_fields"].update(
        occurred_at=flip(b["events"][1]["ledger_fields"]["occurred_at"], 18)
    ),
    "shown time": lambda b: b["events"][1].update(at=b["events"][0]["at"]),
    "message body": lambda b: b["events"][2].update(body=b["events"][2]["body"] + "!"),
    "disclosure text": lambda b: b["events"][0].update(disclosure=b["events"][0]["disclosure"][1:]),
    "phone number": lambda b: b.update(phone="+14155550199"),
    "salt": lambda b: b["events"][0].update(personal_salt=flip(b["events"][0]["personal_salt"])),
    "event hash": lambda b: b["events"][2].update(event_hash=flip(b["events"][2]["event_hash"])),
    "an event removed": lambda b: b["events"].pop(1),
    "events reordered": lambda b: b["events"].insert(1, b["events"].pop(2)),
    # the proof
    "proof hash": lambda b: b["events"][1]["anchor"]["inclusion_proof"].__setitem__(
        0, flip(b["events"][1]["anchor"]["inclusion_proof"][0], 63)
    ),
    "proof shortened": lambda b: b["events"][1]["anchor"]["inclusion_proof"].pop(),
    "leaf index": lambda b: b["events"][1]["anchor"].update(
        leaf_index=b["events"][1]["anchor"]["leaf_index"] + 1
    ),
    "no anchor": lambda b: b["events"][3].update(anchor=None),
    # the checkpoint
    "checkpoint size": change_note_size,
    "checkpoint root": lambda b: b["transparency"]["checkpoints"][0].update(
        note=b["transparency"]["checkpoints"][0]["note"].replace("=\n\n", "A\n\n", 1)
    ),
    "listed root": lambda b: b["transparency"]["checkpoints"][0].update(
        root_hash=flip(b["transparency"]["checkpoints"][0]["root_hash"])
    ),
    "signature": change_signature,
    "timestamp": change_timestamp,
}


EXPECTED = {
    "hashed intent": "event 5: its fields do not hash to its event hash",
    "shown intent": "event 5: 'intent' shows 'other' but the ledger has 'opt_out'",
    "shown status": "event 5: 'status_after' shows 'active'",
    "hashed time": "event 3: its fields do not hash",
    "shown time": "event 3: 'at' differs",
    "message body": "event 4: its message text is not the one in the ledger",
    "disclosure text": "event 1: its disclosure is not the one in the ledger",
    "phone number": "event 1: it is not about +14155550199",
    "salt": "event 1: it is not about +14155550100",
    "event hash": "event 4: its fields do not hash",
    "an event removed": "event 4: expected event #2 of the chain, found #3",
    "events reordered": "event 4: expected event #2 of the chain, found #3",
    "proof hash": "event 3: its inclusion proof does not lead to the checkpoint's root",
    "proof shortened": "event 3: its inclusion proof does not lead",
    "leaf index": "event 3: its inclusion proof does not lead",
    "no anchor": "event 5: not anchored",
    "checkpoint size": "checkpoint 0: a signature by the key does not verify",
    "checkpoint root": "checkpoint 0: the root hash",
    "listed root": "checkpoint 0: its listed size or root differ",
    "signature": "checkpoint 0: a signature by the key does not verify",
    "timestamp": "checkpoint 0: its RFC 3161 timestamp is for something else",
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_one_change_that_matters_fails_naming_what(reference_bundle, tmp_path, mutation):
    bundle_path, key_path = reference_bundle
    bundle = load(bundle_path)
    MUTATIONS[mutation](bundle)
    result = run_tool(bundle, key_path, tmp_path)
    assert result.returncode == 1, result.stdout
    failed = result.stdout.strip().splitlines()[-1]
    assert failed.startswith("FAILED: ") and EXPECTED[mutation] in failed, failed


def test_an_event_newer_than_the_checkpoint_fails_by_name(app, client, bundle_files, tmp_path):
    """The bundle says which events no checkpoint covers yet, and the tool names the first."""
    _, key_path = bundle_files
    send_text(client, PHONE, "HELP")
    runner = app.test_cli_runner()
    out = tmp_path / "newer.json"
    result = runner.invoke(args=["evidence", PHONE, "--no-checkpoint", "--output", str(out)])
    assert "not yet anchored" in result.output
    bundle = load(out)
    newest = bundle["events"][-1]["id"]
    assert bundle["transparency"]["not_anchored"] == [newest]
    result = run_tool(out, key_path, tmp_path)
    assert result.returncode == 1
    assert f"FAILED: event {newest}: not anchored" in result.stdout


def tool_module():
    spec = importlib.util.spec_from_file_location("verify_bundle_under_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_character_of_the_checkpoint_text_matters(reference_bundle):
    """In process, for speed: each character of origin, size and root, changed, fails."""
    bundle_path, key_path = reference_bundle
    tool = tool_module()
    key = tool.load_pem_public_key(key_path.read_bytes())
    bundle = load(bundle_path)
    assert tool.verify(copy.deepcopy(bundle), key, io.StringIO()) == 4
    note = bundle["transparency"]["checkpoints"][0]["note"]
    for position in range(note.index("\n\n")):
        if note[position] == "\n":
            continue
        changed = copy.deepcopy(bundle)
        changed["transparency"]["checkpoints"][0]["note"] = (
            note[:position] + ("1" if note[position] != "1" else "2") + note[position + 1 :]
        )
        with pytest.raises(tool.Failure):
            tool.verify(changed, key, io.StringIO())
