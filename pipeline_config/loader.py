"""Read a YAML profile into a PipelineConfig: `load_config(path)` is the only way configs enter the pipeline.

Any problem with the file (not text, not YAML, duplicate keys, self-referencing aliases, bad values) is a
ConfigError naming the file, the key and the line, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline_config.schema import SOURCE_KINDS, PipelineConfig


class ConfigError(ValueError):
    """A config file is missing or invalid; the message names the file, the key and the line."""


MAX_CONFIG_BYTES = 1 << 20  # a profile is a few KB; this catches --config pointed at a checkpoint
MAX_NODES = 100_000  # after alias expansion: a profile has a few hundred; "billion laughs" has billions
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, mapping: yaml.MappingNode, key: object, first_line: int, line: int) -> None:
        super().__init__(problem=f"duplicate key {key!r}")
        self.mapping, self.key, self.first_line, self.line = mapping, key, first_line, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            # keys a `<<` merge brings in may be overridden; non-scalar keys are rejected by the base class
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_lines:
                raise _DuplicateKey(node, key, first_lines[key], line)
            first_lines[key] = line
        return super().construct_mapping(node, deep)


def _key_lines(root: yaml.Node, where: Path) -> tuple[dict[tuple, int], dict[int, tuple]]:
    """Map each key path to its 1-based line, and each mapping node to its key path, for error messages.

    Walks the tree as aliases expand it, without recursion: a self-referencing alias (`a: &x [*x]`) or an
    alias bomb is a ConfigError here, before the constructor or pydantic could recurse or expand it.
    """
    lines: dict[tuple, int] = {}
    mapping_paths: dict[int, tuple] = {}
    open_nodes: set[int] = set()  # ids of the nodes enclosing the one being visited
    stack: list[tuple[yaml.Node, tuple, bool]] = [(root, (), False)]
    count = 0
    while stack:
        node, path, leaving = stack.pop()
        if leaving:
            open_nodes.discard(id(node))
            continue
        if not isinstance(node, yaml.CollectionNode):
            continue
        if id(node) in open_nodes:
            key = ".".join(map(str, path)) or "(top level)"
            line = lines.get(path, node.start_mark.line + 1)
            raise ConfigError(
                f"{where}: {key}, line {line}: self-referencing alias (the value contains itself)"
            )
        count += len(node.value)
        if count > MAX_NODES:
            raise ConfigError(f"{where}: aliases expand to more than {MAX_NODES} values; not a config file")
        open_nodes.add(id(node))
        stack.append((node, path, True))
        if isinstance(node, yaml.MappingNode):
            mapping_paths.setdefault(id(node), path)
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    sub = (*path, key_node.value)
                    lines.setdefault(sub, key_node.start_mark.line + 1)
                else:
                    sub = path
                    stack.append((key_node, path, False))
                stack.append((value_node, sub, False))
        else:
            for i, item in enumerate(node.value):
                lines.setdefault((*path, i), item.start_mark.line + 1)
                stack.append((item, (*path, i), False))
    return lines, mapping_paths


_SOURCE_KINDS = ", ".join(SOURCE_KINDS)  # gguf, hub, folder, scratch
# What the old keys became, for configs written before model.source.
_MOVED = {
    (
        "model",
        "name_or_path",
    ): "unknown key (now model.source: {kind: hub, id: ...} or {kind: folder, path: ...})",
    ("model", "scratch"): "unknown key (now model.source: {kind: scratch, ...})",
}


def _yaml_loc(loc: tuple, raw: object) -> tuple:
    """pydantic's error location as a key path in the YAML: without union branch labels such as the
    discriminator's tag ('model', 'source', 'scratch', ...) or 'list[str]' that are not keys in the file."""
    out: list = []
    node = raw
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if isinstance(node, dict) and part not in node:
            if part == node.get("kind"):
                continue
            node = None
        elif isinstance(part, str) and node is not None and not isinstance(node, dict):
            continue  # a branch label under a list or a scalar
        elif isinstance(node, dict | list):
            node = (
                node[part] if isinstance(node, dict) or (isinstance(part, int) and part < len(node)) else None
            )
        out.append(part)
    return tuple(out)


def _describe(err: dict, raw: object, lines: dict[tuple, int]) -> str:
    loc = _yaml_loc(err["loc"], raw)
    if err["type"] == "union_tag_invalid":
        loc = (*loc, "kind")
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    where = f", line {line}" if line else ""
    msg = err["msg"].removeprefix("Value error, ")
    if loc in _MOVED and err["type"] == "extra_forbidden":
        msg = _MOVED[loc]
    elif err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "union_tag_not_found":
        msg = f"needs a `kind`: one of {_SOURCE_KINDS}"
    elif err["type"] == "union_tag_invalid":
        msg = f"must be one of {_SOURCE_KINDS} (got {err['ctx']['tag']!r})"
    elif loc == ("model", "source") and not isinstance(err.get("input"), dict):
        msg = f"must be a mapping with a `kind` ({_SOURCE_KINDS}), e.g. {{kind: hub, id: org/name}}"
    elif "input" in err and not isinstance(err["input"], dict | list):
        got = repr(err["input"])
        msg = f"{msg} (got {got if len(got) <= 80 else got[:77] + '...'})"
    return f"  {key}{where}: {msg}"


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: not a config file (larger than {MAX_CONFIG_BYTES // 1024} KiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8)"
        ) from None
    if "\0" in text:
        raise ConfigError(f"{path}: not a text file (NUL byte at offset {text.index(chr(0))})")
    return text


def load_config(path: str | os.PathLike) -> PipelineConfig:
    """Read and validate a YAML profile; raise ConfigError naming the file, key and line on any problem."""
    path = Path(path)
    loader = _StrictLoader(_read_text(path))
    mapping_paths: dict[int, tuple] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError(f"{path}: empty config file (expected a mapping with at least name and model)")
        lines, mapping_paths = _key_lines(root, path)
        raw = loader.construct_document(root)
    except _DuplicateKey as exc:
        key = ".".join(map(str, (*mapping_paths.get(id(exc.mapping), ()), exc.key)))
        raise ConfigError(f"{path}: {key}: duplicate key, at lines {exc.first_line} and {exc.line}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (name, model, train, ...) at the top level, "
            f"got {type(raw).__name__}"
        )
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        details = "\n".join(_describe(e, raw, lines) for e in exc.errors())
        raise ConfigError(f"{path}: invalid config\n{details}") from None
