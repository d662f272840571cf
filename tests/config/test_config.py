import pytest

from resdet.config import ConfigError, flatten_keys, get_cfg, load_config, save_config


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.02\n  STEPS: (60, 80)\nMODEL:\n  MASK_ON: True\n")
    (tmp_path / "leaf.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 100\n")
    cfg = load_config(str(tmp_path / "leaf.yaml"), ["SOLVER.BASE_LR", "0.01", "OUTPUT_DIR", "/tmp/x"])
    assert cfg.SOLVER.BASE_LR == 0.01 and cfg.SOLVER.MAX_ITER == 100 and cfg.SOLVER.STEPS == (60, 80)
    assert cfg.MODEL.MASK_ON is True and cfg.OUTPUT_DIR == "/tmp/x"
    with pytest.raises(Exception):
        cfg.SOLVER.BASE_LR = 1.0  # frozen


def test_misspelled_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"SOLVER\.BASE_LR"):
        load_config(None, ["SOLVER.BASELR", "0.1"])
    (tmp_path / "bad.yaml").write_text("MODEL:\n  BACKBONE:\n    NAEM: resnet50\n")
    with pytest.raises(ConfigError, match=r"MODEL\.BACKBONE\.NAEM.*bad\.yaml.*MODEL\.BACKBONE\.NAME"):
        load_config(str(tmp_path / "bad.yaml"))


def test_wrong_type_and_missing_file_are_named(tmp_path):
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        load_config(None, ["SOLVER.MAX_ITER", "many"])
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(str(tmp_path / "nowhere.yaml"))
    (tmp_path / "leaf.yaml").write_text("_BASE_: missing_base.yaml\n")
    with pytest.raises(ConfigError, match="missing_base.yaml"):
        load_config(str(tmp_path / "leaf.yaml"))
    (tmp_path / "typed.yaml").write_text("SOLVER:\n  MAX_ITER: ten\n")
    with pytest.raises(ConfigError, match="MAX_ITER"):
        load_config(str(tmp_path / "typed.yaml"))
    with pytest.raises(ConfigError, match="pairs"):
        load_config(None, ["SOLVER.MAX_ITER"])


def test_saved_config_is_complete_and_reloads(tmp_path):
    cfg = load_config(None, ["SEED", "7"])
    path = save_config(cfg, str(tmp_path / "run" / "config.yaml"))
    again = load_config(path)
    assert again.SEED == 7 and flatten_keys(again) == flatten_keys(get_cfg())


def test_every_default_key_is_commented():
    import inspect

    from resdet.config import defaults

    src = inspect.getsource(defaults).splitlines()
    for i, line in enumerate(src):
        if line.startswith("_C.") and " = CN()" not in line:
            j = i - 1  # the comment may sit above a run of related keys
            while j >= 0 and src[j].startswith("_C.") and " = CN()" not in src[j]:
                j -= 1
            assert src[j].lstrip().startswith("#"), f"undocumented key: {line}"


def test_every_key_sits_in_its_own_section():
    """A key `_C.TEST.X` is written between `_C.TEST = CN()` and the next top-level section, so that
    reading one section of defaults.py shows all of its keys (TEST keys once sat in INPUT's)."""
    import inspect
    import re

    from resdet.config import defaults

    section, misplaced = None, []
    for line in inspect.getsource(defaults).splitlines():
        m = re.match(r"_C\.(\w+) = CN\(\)", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"_C\.(\w+)\.", line)
        if m and m.group(1) != section:
            misplaced.append(f"{line.split('=')[0].strip()} sits in the {section} section")
    assert not misplaced, misplaced


def test_every_shipped_config_loads():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    paths = sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))
    assert any(p.endswith("custom_scratch_r18_gn.yaml") for p in paths)
    for path in paths:
        load_config(path)  # every key known, every value of the right type


def test_base_chains_are_local_files_and_cycles_are_named(tmp_path):
    """issue 21: fvcore's loader handed a `_BASE_` URL to iopath (a download wherever an HTTP handler is
    registered), recursed until RecursionError on a file that is its own base, and failed with TypeError /
    AttributeError on an empty or non-mapping file. Now: local files only (no connection is made), cycles
    and non-mappings named."""
    import socket
    import threading

    from resdet.config import ConfigError, load_config

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    connections = []

    def accept():
        try:
            connections.append(server.accept())
        except OSError:
            pass

    listener = threading.Thread(target=accept)
    listener.start()
    url_cfg = tmp_path / "url.yaml"
    url_cfg.write_text(f"_BASE_: http://127.0.0.1:{server.getsockname()[1]}/base.yaml\n")
    try:
        with pytest.raises(ConfigError, match=r"names the _BASE_ 'http://127.0.0.1:\d+/base.yaml': only local files"):
            load_config(str(url_cfg))
    finally:
        listener.join()
        server.close()
    assert not connections, "the config reader connected to the _BASE_ URL"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("_BASE_: b.yaml\n")
    b.write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"'.*a.yaml' is its own _BASE_ \(through .*a.yaml -> .*b.yaml\)"):
        load_config(str(a))
    for text, expected in (("", None), ("- 1\n", "holds a list"), ("5\n", "holds a int"), ("_BASE_: 3\n", "_BASE_ must be"),
                           ("MODEL:\n  1: 2\n", "key 1 under 'MODEL.' is a int")):
        a.write_text(text)
        if expected is None:
            assert load_config(str(a)).MODEL.DEVICE == "cuda"   # an empty file is the defaults
        else:
            with pytest.raises(ConfigError, match=expected) as e:
                load_config(str(a))
            assert str(a) in str(e.value)
