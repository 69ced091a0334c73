"""Fast-tier fixtures: the Java UDF classes in one py4j gateway JVM for the whole session."""

from dataclasses import dataclass

import pytest

from mlvigil.catalog import compile_catalog, encode_catalog
from mlvigil.config import Config, parse_config
from tests.java_gateway import JavaUdfs, contract_config_raw, get_gateway


@pytest.fixture(scope="session")
def gateway():
    """PyFlink's gateway JVM with the UDF jar on its class path (started once per session)."""
    return get_gateway()


@dataclass
class Contract:
    """The contract catalog (tests.java_gateway.contract_config_raw) on both sides."""

    raw: dict
    cfg: Config
    catalog: dict
    """What mlvigil.catalog.compile_catalog sends to the job."""
    java: JavaUdfs
    """The same catalog decoded by MonitorCatalog, and the UDF classes opened with it."""


@pytest.fixture(scope="session")
def contract(gateway, tmp_path_factory) -> Contract:
    raw = contract_config_raw(tmp_path_factory.mktemp("contract"))
    cfg = parse_config(raw)
    catalog = compile_catalog(cfg)
    return Contract(raw, cfg, catalog, JavaUdfs(gateway, encode_catalog(catalog)))
