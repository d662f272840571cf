"""No reader in resdet/ or tools/ can run code from a file it opens (issue 16's audit, kept as a test).

Every call is read with ast: plain pickle (load/loads/Unpickler) only in resdet/data/safe_pickle.py's
restricted unpickler; torch.load only with weights_only=True; numpy.load never with allow_pickle=True;
no yaml.load / unsafe_load / full_load / unsafe loaders; no config merged with allow_unsafe=True.
"""
import ast
import os


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESTRICTED_UNPICKLER = os.path.join("resdet", "data", "safe_pickle.py")


def _sources():
    for top in ("resdet", "tools"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith(".py"):
                    yield os.path.relpath(os.path.join(root, f), REPO)


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _problems(rel: str, repo: str = REPO):
    tree = ast.parse(open(os.path.join(repo, rel), encoding="utf-8").read(), rel)
    aliases = {}   # `from pickle import load as x` -> x: pickle.load
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "yaml", "torch", "numpy", "dill", "marshal"):
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Call, ast.Attribute, ast.Name)):
            name = _dotted(node.func if isinstance(node, ast.Call) else node)
            head, _, rest = name.partition(".")
            name = aliases.get(head, head) + ("." + rest if rest else "")
            name = name.replace("np.", "numpy.", 1) if name.startswith("np.") else name
            if isinstance(node, ast.Call):
                if name == "torch.load" and not _is_true(_kw(node, "weights_only")):
                    yield node.lineno, "torch.load without weights_only=True"
                if name == "numpy.load" and _is_true(_kw(node, "allow_pickle")):
                    yield node.lineno, "numpy.load(allow_pickle=True)"
                if name.endswith("merge_from_file") and _is_true(_kw(node, "allow_unsafe")):
                    yield node.lineno, "a config merged with allow_unsafe=True"
                if name == "yaml.load" and "Safe" not in _dotted(_kw(node, "Loader") or ast.Name("")):
                    yield node.lineno, "yaml.load without a SafeLoader"
            if isinstance(node, ast.Attribute) or isinstance(node, ast.Name):
                if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads",
                            "marshal.load", "marshal.loads", "numpy.core.multiarray._reconstruct") \
                        and rel != RESTRICTED_UNPICKLER:
                    yield node.lineno, f"{name} (use resdet.data.safe_pickle)"
                if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.UnsafeLoader", "yaml.FullLoader",
                            "yaml.Loader"):
                    yield node.lineno, name


def test_no_reader_unpickles_untrusted_files():
    found = [f"{rel}:{line}: {what}" for rel in _sources() for line, what in _problems(rel)]
    assert not found, "\n".join(found)


def test_the_audit_sees_what_it_must_refuse(tmp_path):
    bad = tmp_path / "resdet" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import pickle, torch, yaml\nimport numpy as np\nfrom pickle import loads as L\n"
                   "a = pickle.load(open('f', 'rb'))\nb = torch.load('x')\nc = torch.load('x', weights_only=False)\n"
                   "d = np.load('x', allow_pickle=True)\ne = yaml.load(open('c'))\nf = yaml.unsafe_load('x')\n"
                   "g = L(b'')\nh = torch.load('x', weights_only=True)\ni = yaml.load(s, Loader=yaml.SafeLoader)\n")
    lines = sorted(line for line, _ in _problems(os.path.join("resdet", "bad.py"), repo=str(tmp_path)))
    assert lines == [4, 5, 6, 7, 8, 9, 10], lines
