"""No reader in resdet/ or tools/ can run code from a file it opens (issues 16 and 21's audit, kept as a test).

Every module is read with ast, its imports and aliases resolved first (`import pickle as pk`,
`from torch import serialization as s`, `x = pickle.loads`, `importlib.import_module("pickle")`,
`getattr(pickle, "loads")`), so that each name below is recognised however it is spelled:
- plain pickle (load/loads/Unpickler/_Unpickler, _pickle, dill, marshal, shelve, joblib, pandas.read_pickle)
  only in resdet/data/safe_pickle.py's restricted unpickler;
- torch.load / torch.serialization.load only with weights_only=True written as a literal;
- numpy.load only without allow_pickle, or with allow_pickle=False written as a literal;
- no yaml.load without a SafeLoader, no yaml.unsafe_load / full_load / unsafe loaders;
- no config merged with allow_unsafe other than a literal False;
- getattr with a computed name on one of those modules (it could be any of the above);
- torch.export.load and torch._inductor.aoti_load_package (which unpickle, or load compiled code, by
  design) only in resdet/export/runtime.py, where the .pt2 is checked first and the README says which
  files are to be trusted.
"""
import ast
import os
from typing import Dict, Iterator, Optional, Tuple


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESTRICTED_UNPICKLER = os.path.join("resdet", "data", "safe_pickle.py")
EXPORT_RUNTIME = os.path.join("resdet", "export", "runtime.py")

RISKY_MODULES = ("pickle", "_pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "torch", "torch.serialization",
                 "numpy", "yaml", "importlib", "pandas", "torch.export", "torch._inductor")
PLAIN_UNPICKLING = {"pickle.load", "pickle.loads", "pickle.Unpickler", "pickle._Unpickler", "pickle._load",
                    "pickle._loads", "_pickle.load", "_pickle.loads", "_pickle.Unpickler", "cPickle.load",
                    "cPickle.loads", "dill.load", "dill.loads", "marshal.load", "marshal.loads", "shelve.open",
                    "joblib.load", "pandas.read_pickle", "numpy.core.multiarray._reconstruct"}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
UNSAFE_YAML = {"yaml.unsafe_load", "yaml.full_load", "yaml.UnsafeLoader", "yaml.FullLoader", "yaml.Loader",
               "yaml.unsafe_load_all", "yaml.full_load_all", "yaml.load_all"}
TRUSTED_FILE_LOADERS = {"torch.export.load", "torch._inductor.aoti_load_package"}


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
    return ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_literal(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class _Names:
    """What each local name stands for, from the module's imports and simple assignments."""

    def __init__(self, tree: ast.AST):
        self.aliases: Dict[str, str] = {}
        for node in ast.walk(tree):  # imports first: an assignment may use them
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name          # import torch.serialization as ts
                    else:
                        head = a.name.split(".")[0]
                        self.aliases[head] = head                # import torch.serialization binds torch
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for _ in range(3):  # chains of assignments: x = pickle; y = x.loads
            for node in ast.walk(tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    value = self.resolve(node.value)
                    if value and any(value == m or value.startswith(m + ".") for m in RISKY_MODULES):
                        for t in targets:
                            if isinstance(t, ast.Name):
                                self.aliases[t.id] = value

    def resolve(self, node) -> str:
        """The canonical dotted name an expression refers to ("" when it is not a name)."""
        if isinstance(node, ast.Call):
            fn = self.resolve(node.func)
            args = node.args
            if fn in ("getattr", "builtins.getattr") and len(args) >= 2 and isinstance(args[1], ast.Constant) \
                    and isinstance(args[1].value, str):
                base = self.resolve(args[0])
                return f"{base}.{args[1].value}" if base else ""
            if fn in ("importlib.import_module", "__import__", "builtins.__import__") and args \
                    and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                return args[0].value
            return ""
        name = _dotted(node)
        if not name:
            if isinstance(node, ast.Attribute):
                base = self.resolve(node.value)
                return f"{base}.{node.attr}" if base else ""
            return ""
        head, _, rest = name.partition(".")
        head = self.aliases.get(head, head)
        return head + ("." + rest if rest else "")


def _risky_module(name: str) -> Optional[str]:
    return next((m for m in RISKY_MODULES if name == m), None)


def _problems(rel: str, repo: str = REPO) -> Iterator[Tuple[int, str]]:
    tree = ast.parse(open(os.path.join(repo, rel), encoding="utf-8").read(), rel)
    names = _Names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = names.resolve(node.func)
            if name in TORCH_LOADS and not _is_literal(_kw(node, "weights_only"), True):
                yield node.lineno, f"{name} without weights_only=True"
            if name == "numpy.load":
                allow = _kw(node, "allow_pickle")
                if allow is not None and not _is_literal(allow, False):
                    yield node.lineno, "numpy.load with allow_pickle other than False"
            if name.endswith("merge_from_file"):
                unsafe = _kw(node, "allow_unsafe") if _kw(node, "allow_unsafe") is not None else (
                    node.args[1] if len(node.args) > 1 else None)
                if unsafe is not None and not _is_literal(unsafe, False):
                    yield node.lineno, "a config merged with allow_unsafe other than False"
            if name == "yaml.load":
                loader = _kw(node, "Loader") if _kw(node, "Loader") is not None else (
                    node.args[1] if len(node.args) > 1 else None)
                if loader is None or not names.resolve(loader).endswith("SafeLoader"):
                    yield node.lineno, "yaml.load without a SafeLoader"
            if name in ("getattr", "builtins.getattr") and len(node.args) >= 2 \
                    and not isinstance(node.args[1], ast.Constant):
                module = _risky_module(names.resolve(node.args[0]))
                if module:
                    yield node.lineno, f"getattr({module}, <computed name>)"
        if isinstance(node, (ast.Attribute, ast.Name, ast.Call)):
            name = names.resolve(node)
            if name in PLAIN_UNPICKLING and rel != RESTRICTED_UNPICKLER:
                yield node.lineno, f"{name} (use resdet.data.safe_pickle)"
            if name in UNSAFE_YAML:
                yield node.lineno, name
            if name in TRUSTED_FILE_LOADERS and rel != EXPORT_RUNTIME:
                yield node.lineno, f"{name} (only resdet/export/runtime.py loads exported programs)"


def _lines(rel, repo):
    return sorted({line for line, _ in _problems(rel, repo=repo)})


def test_no_reader_unpickles_untrusted_files():
    found = sorted({f"{rel}:{line}: {what}" for rel in _sources() for line, what in _problems(rel)})
    assert not found, "\n".join(found)


def test_the_audit_sees_what_it_must_refuse(tmp_path):
    bad = tmp_path / "resdet" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import pickle, torch, yaml\nimport numpy as np\nfrom pickle import loads as L\n"
                   "a = pickle.load(open('f', 'rb'))\nb = torch.load('x')\nc = torch.load('x', weights_only=False)\n"
                   "d = np.load('x', allow_pickle=True)\ne = yaml.load(open('c'))\nf = yaml.unsafe_load('x')\n"
                   "g = L(b'')\nh = torch.load('x', weights_only=True)\ni = yaml.load(s, Loader=yaml.SafeLoader)\n")
    assert _lines(os.path.join("resdet", "bad.py"), str(tmp_path)) == [4, 5, 6, 7, 8, 9, 10]


ALIAS_KINDS = {
    "module alias": "import pickle as pk\nx = pk.loads(b'')\n",
    "torch alias": "import torch as T\nx = T.load('f')\n",
    "torch.serialization.load": "import torch\nx = torch.serialization.load('f')\n",
    "torch.serialization imported as": "import torch.serialization as ts\nx = ts.load('f')\n",
    "from torch import serialization": "from torch import serialization as s\nx = s.load('f', weights_only=False)\n",
    "weights_only a variable": "import torch\nsafe = True\nx = torch.load('f', weights_only=safe)\n",
    "allow_pickle a variable": "import numpy as np\nflag = False\nx = np.load('f', allow_pickle=flag)\n",
    "numpy.load under another name": "from numpy import load as npl\nx = npl('f', allow_pickle=True)\n",
    "getattr with a constant": "import pickle\nx = getattr(pickle, 'loads')(b'')\n",
    "getattr with a computed name": "import pickle\nname = 'lo' + 'ads'\nx = getattr(pickle, name)\n",
    "assigned function": "import pickle\nread = pickle.loads\nx = read(b'')\n",
    "assigned module": "import pickle\nmod = pickle\nx = mod.load(open('f', 'rb'))\n",
    "importlib": "import importlib\nm = importlib.import_module('pickle')\nx = m.loads(b'')\n",
    "__import__": "m = __import__('pickle')\nx = m.loads(b'')\n",
    "C pickle": "import _pickle\nx = _pickle.loads(b'')\n",
    "pure-Python Unpickler": "import pickle\nx = pickle._Unpickler(open('f', 'rb')).load()\n",
    "passed as a callback": "import pickle\nimport functools\nx = functools.partial(pickle.load)\n",
    "yaml loader positional": "import yaml\nx = yaml.load('a', yaml.FullLoader)\n",
    "yaml alias": "import yaml as y\nx = y.unsafe_load('a')\n",
    "allow_unsafe variable": "def f(cfg, u):\n    cfg.merge_from_file('c.yaml', allow_unsafe=u)\n",
    "torch.export.load outside the runtime": "import torch\nx = torch.export.load('m.pt2')\n",
    "aoti outside the runtime": "from torch._inductor import aoti_load_package\nx = aoti_load_package('m.pt2')\n",
}


def test_the_audit_resolves_every_alias_kind(tmp_path):
    (tmp_path / "resdet").mkdir()
    missed = []
    for i, (kind, source) in enumerate(ALIAS_KINDS.items()):
        rel = os.path.join("resdet", f"alias_{i}.py")
        (tmp_path / rel).write_text(source)
        if not list(_problems(rel, repo=str(tmp_path))):
            missed.append(kind)
    assert not missed, f"the audit missed: {missed}"


def test_the_audit_leaves_safe_spellings_alone(tmp_path):
    (tmp_path / "resdet").mkdir()
    rel = os.path.join("resdet", "fine.py")
    (tmp_path / rel).write_text(
        "import torch as T\nimport numpy as np\nimport yaml\nimport pickle\n"
        "a = T.load('f', weights_only=True)\nb = np.load('f')\nc = np.load('f', allow_pickle=False)\n"
        "d = yaml.safe_load('x')\ne = yaml.load('x', Loader=yaml.CSafeLoader)\nf = pickle.dumps(1)\n"
        "g = getattr(T, 'float32')\n")
    assert list(_problems(rel, repo=str(tmp_path))) == []
