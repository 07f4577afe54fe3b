"""Compile the ledger contract in-process with the `vyper` package.

No solc, no download: the compiler is the installed ``vyper`` package and the
snekmate modules are found next to the installed ``snekmate`` package. The
artifact (ABI + deployment bytecode) is cached as JSON in a cache directory,
keyed by the sha256 of the contract source, the sources of every module it can
import from snekmate, the compiler version and the EVM version; editing the
source (or upgrading either package) therefore rebuilds it.

    artifact = load_artifact()          # compile once, then from the cache
    artifact.abi, artifact.bytecode
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from coopgrid.errors import ConfigError

#: The contract shipped with coopgrid.
CONTRACTS_DIR = Path(__file__).with_name("contracts")
LEDGER_SOURCE = CONTRACTS_DIR / "ledger.vy"
#: The coopgrid token (an ERC-20 the operator mints) of embedded and test deployments.
TOKEN_SOURCE = CONTRACTS_DIR / "coop_token.vy"

#: EVM version the bytecode targets: supported by py-evm 0.12 and anvil alike.
EVM_VERSION = "cancun"
#: Compiler settings (part of the cache key).
OPTIMIZE = "gas"
VENOM = False  # Venom is still flagged experimental in vyper 0.4.x


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: what deploying and calling it needs."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    compiler: str
    key: str


def default_cache_dir() -> Path:
    """``$COOPGRID_CACHE_DIR/contracts``, else ``$XDG_CACHE_HOME/coopgrid/contracts``."""
    root = os.environ.get("COOPGRID_CACHE_DIR")
    if root:
        return Path(root) / "contracts"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "coopgrid" / "contracts"


def _snekmate_root() -> Path:
    try:
        import snekmate
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise ConfigError("the snekmate package is not installed (pip install snekmate)") from exc
    # `snekmate` is a namespace-less package dir; its parent is the search path.
    return Path(next(iter(snekmate.__path__))).parent


def _compiler_version() -> str:
    return metadata.version("vyper")


def _cache_key(source: str, search_paths: list[Path], evm_version: str) -> str:
    h = hashlib.sha256()
    h.update(source.encode())
    h.update(b"\0vyper=" + _compiler_version().encode())
    h.update(b"\0evm=" + evm_version.encode())
    h.update(f"\0optimize={OPTIMIZE}\0venom={VENOM}".encode())
    snek = _snekmate_root() / "snekmate"
    for path in sorted(snek.rglob("*.vy*")):
        h.update(b"\0" + str(path.relative_to(snek)).encode() + b"\0")
        h.update(path.read_bytes())
    for extra in search_paths:
        h.update(b"\0path=" + str(extra).encode())
    return h.hexdigest()


def compile_source(
    path: Path,
    *,
    evm_version: str = EVM_VERSION,
) -> tuple[list[dict[str, Any]], bytes]:
    """Compile ``path`` now (no cache); returns (abi, deployment bytecode)."""
    from vyper.compiler import compile_from_file_input
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.compiler.settings import OptimizationLevel, Settings

    path = Path(path).resolve()
    bundle = FilesystemInputBundle([path.parent, _snekmate_root()])
    file_input = bundle.load_file(path)
    settings = Settings(
        evm_version=evm_version,
        optimize=OptimizationLevel.from_string(OPTIMIZE),
        experimental_codegen=VENOM,
    )
    out = compile_from_file_input(
        file_input,
        input_bundle=bundle,
        settings=settings,
        output_formats=["abi", "bytecode"],
    )
    bytecode = out["bytecode"]
    return out["abi"], bytes.fromhex(bytecode[2:] if bytecode.startswith("0x") else bytecode)


def compile_contract(
    path: Path | str = LEDGER_SOURCE,
    *,
    cache_dir: Path | str | None = None,
    evm_version: str = EVM_VERSION,
) -> Artifact:
    """The artifact of the contract at ``path``, from the cache or compiled now.

    The cache file is written atomically (temp file + rename), so a crash while
    writing never leaves a torn artifact behind; an unreadable cache entry is
    simply rebuilt.
    """
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read contract source {path}: {exc}") from exc
    key = _cache_key(source, [], evm_version)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache / f"{path.stem}-{key[:32]}.json"
    if entry.exists():
        try:
            data = json.loads(entry.read_text())
            if data.get("key") == key:
                return Artifact(
                    name=data["name"],
                    abi=data["abi"],
                    bytecode=bytes.fromhex(data["bytecode"]),
                    compiler=data["compiler"],
                    key=key,
                )
        except (OSError, ValueError, KeyError):
            pass  # rebuilt below
    abi, bytecode = compile_source(path, evm_version=evm_version)
    artifact = Artifact(
        name=path.stem, abi=abi, bytecode=bytecode, compiler=f"vyper {_compiler_version()}", key=key
    )
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {
                    "name": artifact.name,
                    "key": key,
                    "compiler": artifact.compiler,
                    "evm_version": evm_version,
                    "abi": abi,
                    "bytecode": bytecode.hex(),
                },
                fh,
            )
        os.replace(tmp, entry)
    except OSError:
        pass  # a read-only cache only costs a recompile next time
    return artifact


@lru_cache(maxsize=8)
def _memo(path: str, mtime_ns: int, cache_dir: str | None) -> Artifact:
    return compile_contract(path, cache_dir=cache_dir)


def load_artifact(
    path: Path | str = LEDGER_SOURCE, cache_dir: Path | str | None = None
) -> Artifact:
    """Like :func:`compile_contract`, memoised per process (by path and mtime)."""
    p = Path(path).resolve()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"cannot read contract source {p}: {exc}") from exc
    return _memo(str(p), mtime, None if cache_dir is None else str(cache_dir))
