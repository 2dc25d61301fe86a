"""What the dashboard exposes: bind address, upload size, raw HTML, dangerous calls, typed paths.

The source scans are AST-based, so they fail when a *new* unsafe use appears anywhere in
app/ (the router app/main.py among them), pages/ or esnet/, naming file and line.
"""
from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from esnet import api

REPO = Path(__file__).resolve().parents[2]
UI_FILES = sorted([*(REPO / "app").rglob("*.py"), *(REPO / "pages").rglob("*.py")])
ALL_FILES = sorted({*UI_FILES, *(REPO / "esnet").rglob("*.py")})
MAX_UPLOAD_MB = 50
"""Upper bound the test allows for server.maxUploadSize (MB); uploads are single person crops."""


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


# --- app/.streamlit/config.toml -----------------------------------------------------------------
@pytest.fixture(scope="module")
def streamlit_config() -> dict:
    """The entry script's config (app/.streamlit/), which the repository root's .streamlit/ links to."""
    assert (REPO / ".streamlit" / "config.toml").resolve() == (REPO / "app" / ".streamlit" / "config.toml").resolve()
    return tomllib.loads((REPO / "app" / ".streamlit" / "config.toml").read_text(encoding="utf-8"))


def test_binds_localhost_only(streamlit_config: dict, record) -> None:
    """The dashboard listens on 127.0.0.1 unless the user passes --server.address."""
    assert streamlit_config["server"]["address"] == "127.0.0.1"
    record("server.address in app/.streamlit/config.toml", "streamlit run", "127.0.0.1 (loopback only)")


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux: /proc/net/tcp and tcp6)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("where", ["the repository root", "another directory"])
def test_streamlit_run_listens_on_loopback_only(where: str, tmp_path: Path, record) -> None:
    """`streamlit run app/main.py` with no --server.address listens on 127.0.0.1 alone, started from the
    repository root or from anywhere else: Streamlit reads .streamlit/config.toml in the working directory
    and, after it, the one beside the script (app/.streamlit/config.toml)."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("reads the listening sockets from /proc/net/tcp (Linux)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cwd = REPO if where == "the repository root" else tmp_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["HOME"] = str(tmp_path)  # no user-level ~/.streamlit/config.toml
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py"),
                                 "--server.port", str(port), "--server.headless", "true"],
                                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (addresses := _listening_addresses(port)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # a wildcard server binds its IPv4 and IPv6 sockets one after the other
        addresses = _listening_addresses(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert addresses == {"127.0.0.1"}, f"listening on {addresses or 'nothing'}; server log:\n{log.read_text()[-2000:]}"
    record(f"streamlit run app/main.py from {where}", "server socket", "listens on 127.0.0.1 only")


def test_upload_size_is_bounded(streamlit_config: dict, record) -> None:
    """maxUploadSize is set, and small: uploads are person crops, decoded by esnet.data.images."""
    size = streamlit_config["server"]["maxUploadSize"]
    assert isinstance(size, int) and 1 <= size <= MAX_UPLOAD_MB, size
    record("server.maxUploadSize", "st.file_uploader", f"{size} MB (Streamlit's default is 200)")


def test_cross_site_protections_not_disabled(streamlit_config: dict, record) -> None:
    """XSRF protection and CORS stay on (their defaults); no static file serving; no usage stats."""
    server = streamlit_config.get("server", {})
    assert server.get("enableXsrfProtection", True) is True
    assert server.get("enableCORS", True) is True
    assert server.get("enableStaticServing", False) is False
    assert streamlit_config.get("browser", {}).get("gatherUsageStats") is False
    record("enableXsrfProtection / enableCORS / enableStaticServing / gatherUsageStats", "streamlit run",
           "on / on / off / off")


# --- raw HTML -------------------------------------------------------------------------------
HTML_FUNCS = {"html"}  # st.html, components.html, st.components.v1.html
UNSAFE_KWARGS = ("unsafe_allow_html", "unsafe_allow_javascript")


def _constants(tree: ast.Module) -> set[str]:
    """Module-level names bound once to a constant string (``FOOTER = "<hr>"``)."""
    names: dict[str, int] = {}
    consts = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    names[t.id] = names.get(t.id, 0) + 1
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if _is_constant(node.value, set()) and names[node.targets[0].id] == 1:
                consts.add(node.targets[0].id)
    return consts


def _is_constant(node: ast.AST, consts: set[str]) -> bool:
    """A string that cannot carry user text: literals, f-strings without fields, + of those, known constants."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(v, ast.Constant) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_constant(node.left, consts) and _is_constant(node.right, consts)
    if isinstance(node, ast.Name):
        return node.id in consts
    return False


def unsafe_html_uses(source: str, name: str) -> list[str]:
    """``file:line`` of each raw-HTML call whose content is not a constant string."""
    tree = ast.parse(source, filename=name)
    consts = _constants(tree)
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        attr = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        flagged = [k for k in node.keywords if k.arg in UNSAFE_KWARGS
                   and not (isinstance(k.value, ast.Constant) and k.value.value is False)]
        if not flagged and attr not in HTML_FUNCS:
            continue
        content = [*node.args, *(k.value for k in node.keywords if k.arg in ("body", "html"))]
        if not content or not all(_is_constant(a, consts) for a in content):
            bad.append(f"{name}:{node.lineno} {ast.unparse(node)[:120]}")
    return bad


def test_html_checker_catches_user_text(record) -> None:
    """The checker itself: constant HTML passes, anything built from a variable is flagged."""
    ok = 'import streamlit as st\nHR = "<hr>"\nst.markdown("<b>x</b>", unsafe_allow_html=True)\n' \
         'st.markdown(HR, unsafe_allow_html=True)\nst.markdown(name)\nst.markdown(f"{name}", unsafe_allow_html=False)\n'
    assert unsafe_html_uses(ok, "ok.py") == []
    bad = ('import streamlit as st\nimport streamlit.components.v1 as components\n'
           'st.markdown(f"<b>{name}</b>", unsafe_allow_html=True)\nst.write(name, unsafe_allow_html=True)\n'
           'st.html(name)\ncomponents.html("<p>" + name)\nst.markdown(body=name, unsafe_allow_html=1)\n')
    assert [b.split()[0] for b in unsafe_html_uses(bad, "bad.py")] == [f"bad.py:{n}" for n in (3, 4, 5, 6, 7)]
    record("f-string / variable / concatenation into st.markdown(unsafe_allow_html=True), st.html, "
           "components.html", "AST scan (self-test)", "flagged")


def test_no_raw_html_with_user_text(record) -> None:
    """No page or app module passes non-constant text to raw HTML (unsafe_allow_html, st.html, components.html)."""
    bad = [b for f in UI_FILES for b in unsafe_html_uses(f.read_text(encoding="utf-8"), _rel(f))]
    assert not bad, "raw HTML built from non-constant text:\n" + "\n".join(bad)
    assert len(UI_FILES) > 3
    record(f"raw HTML in {len(UI_FILES)} UI files (app/, pages/)",
           "AST scan", "none built from user text")


# --- dangerous calls anywhere ---------------------------------------------------------------
def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    parts.append(f.id if isinstance(f, ast.Name) else "<expr>")  # model.to(d).eval() -> <expr>.eval
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def dangerous_calls(source: str, name: str) -> list[str]:
    """Calls that run code from data, reach a shell, or unpickle, outside their one allowed place."""
    bad = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if not isinstance(node, ast.Call):
            continue
        call = _call_name(node)
        where = f"{name}:{node.lineno} {call}"
        if call in ("eval", "exec", "os.system", "os.popen", "pickle.load", "pickle.loads", "yaml.load",
                    "marshal.loads", "shelve.open", "joblib.load", "dill.load", "dill.loads"):
            bad.append(where)
        elif call == "torch.load" and (name != "esnet/checkpoint.py" or _kw(node, "weights_only") is not True):
            bad.append(f"{where} (only esnet/checkpoint.py loads weights, with weights_only=True)")
        elif call in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
            bad.append(f"{where} allow_pickle")
        elif _kw(node, "shell") not in (None, False):
            bad.append(f"{where} shell=True")
    return bad


def test_dangerous_call_checker_self_test(record) -> None:
    """The checker itself flags torch.load, pickle, shell=True, allow_pickle=True and eval."""
    src = ('import torch, pickle, subprocess, numpy as np\ntorch.load(p)\npickle.loads(b)\n'
           'subprocess.run(c, shell=True)\nnp.load(p, allow_pickle=True)\neval(s)\nnp.load(p)\nm.to(d).eval()\n')
    assert [b.split()[0] for b in dangerous_calls(src, "x.py")] == [f"x.py:{n}" for n in (2, 3, 4, 5, 6)]
    record("torch.load without weights_only, pickle.loads, shell=True, np.load(allow_pickle=True), eval",
           "AST scan (self-test)", "flagged")


def test_no_code_from_data(record) -> None:
    """No eval/exec/pickle/shell anywhere; torch.load only in esnet/checkpoint.py with weights_only=True."""
    bad = [b for f in ALL_FILES for b in dangerous_calls(f.read_text(encoding="utf-8"), _rel(f))]
    assert not bad, "\n".join(bad)
    record(f"eval, exec, pickle, shell=True, torch.load, np.load(allow_pickle) in {len(ALL_FILES)} files",
           "AST scan", "none, except torch.load(weights_only=True) in esnet/checkpoint.py")


# --- api.confine_path (tests/test_confine_path.py has the basic rules; these are the tricky ones) ----
@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    (r / "runs").mkdir(parents=True)
    return r


def _refused(path, roots, words: str) -> str:
    with pytest.raises(ValueError) as info:
        api.confine_path(path, roots)
    assert words in str(info.value), str(info.value)
    return str(info.value)


def test_confine_sibling_with_common_prefix(root: Path, record) -> None:
    """'/x/data2' is not inside '/x/data' although the string starts the same."""
    (root.parent / "data2").mkdir()
    msg = _refused(root.parent / "data2" / "secret", [root], "outside the allowed roots")
    record("sibling folder sharing the root's name prefix (data2 vs data)", "api.confine_path", "refused", msg)


def test_confine_dotdot_through_symlink(root: Path, record) -> None:
    """'..' after a symlink is resolved physically: root/link/.. is lexically the root itself, but
    physically the parent of the link's target, outside (a normpath-only check would accept it)."""
    outside = root.parent / "outside" / "deep"
    outside.mkdir(parents=True)
    (root / "link").symlink_to(outside)
    got = _refused(f"{root}/link/..", [root], "a symlink inside the allowed roots may not lead out")
    assert f"resolves to '{root.parent / 'outside'}'" in got
    record("'root/link/..' where link leads out (lexically inside)", "api.confine_path", "refused", got)


def test_confine_symlink_loop_and_nul(root: Path, record) -> None:
    """A symlink loop and a NUL byte give ValueError, never OSError/RuntimeError."""
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    for path, label in ((root / "a" / "x", "symlink loop"), (f"{root}/runs\x00/etc/passwd", "NUL byte in path")):
        with pytest.raises(ValueError) as info:
            api.confine_path(path, [root])
        record(label, "api.confine_path", "refused (ValueError)", str(info.value))


def test_confine_symlinked_root_and_inner_links(root: Path, tmp_path: Path, record) -> None:
    """A root that is itself a symlink, and links that stay inside: allowed, returned resolved."""
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    (root / "runs" / "r1").mkdir()
    (root / "latest").symlink_to(root / "runs" / "r1")
    assert api.confine_path(alias / "runs", [alias]) == (root / "runs").resolve()
    assert api.confine_path(root / "latest", [root]) == (root / "runs" / "r1").resolve()
    record("root given as a symlink; a link that stays inside", "api.confine_path", "allowed, resolved path")


def test_confine_home_and_relative_escapes(root: Path, monkeypatch: pytest.MonkeyPatch, record) -> None:
    """'~' and relative paths are resolved before the check: '~/..' and '../../..' from the repo are refused."""
    monkeypatch.setenv("HOME", str(root))
    assert api.confine_path("~/runs", [root]) == (root / "runs").resolve()
    msg = _refused("~/..", [root], "'..' may not climb out")
    record("'~/..' with HOME at the allowed root", "api.confine_path", "refused", msg)
    ups = "../" * (len(api.REPO_ROOT.parts) + 2)  # past '/' stays at '/', however deep the clone lives
    msg = _refused(ups + "etc", [api.REPO_ROOT], "'..' may not climb out")
    record("relative '../' x (repository depth + 2) + 'etc' from the repository", "api.confine_path", "refused",
           msg.replace(ups, "../ x N + "))
    assert os.path.isabs(str(api.confine_path("assets", [api.REPO_ROOT])))
