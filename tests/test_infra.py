"""The Bicep in infra/: it parses, passes the security scan, and matches what the app reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stateful_agent.platform.settings import LOCAL_ONLY_SETTINGS, SETTINGS
from tests.bicep import INFRA, ROOT, app_settings, run_checkov, syntax_errors

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
SAMPLES = ROOT / "tests" / "infra_samples"
CUSTOM_CHECKS = ["CKV_SAF_1", "CKV_SAF_2", "CKV_SAF_3", "CKV_SAF_4", "CKV_SAF_5", "CKV_SAF_6"]

#: Set by the infrastructure for the Functions host and telemetry, not read by the app.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_ENABLE_INIT_INDEXING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
}

#: The role each role definition id stands for; nothing else may be granted.
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": "Cognitive Services OpenAI User",
    "00000000-0000-0000-0000-000000000002": "Cosmos DB Built-in Data Contributor",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def test_infra_has_the_expected_modules():
    assert {p.relative_to(INFRA).as_posix() for p in BICEP_FILES} == {
        "main.bicep",
        "modules/identity.bicep",
        "modules/monitoring.bicep",
        "modules/storage.bicep",
        "modules/cosmos.bicep",
        "modules/openai.bicep",
        "modules/function-app.bicep",
    }


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_bicep_parses_without_errors(path: Path):
    assert syntax_errors(path) == []


def test_the_syntax_check_reports_file_line_and_column():
    problems = syntax_errors(SAMPLES / "syntax_error.bicep")
    assert problems
    assert all(re.match(r"tests/infra_samples/syntax_error\.bicep:\d+:\d+: ", p) for p in problems)


@pytest.fixture(scope="module")
def scan() -> dict:
    return run_checkov(INFRA)


def test_checkov_parses_every_file(scan):
    assert scan["summary"]["parsing_errors"] == 0, scan["results"].get("parsing_errors")


def test_checkov_finds_no_failed_check(scan):
    failed = [f"{f['check_id']} {f['resource']} ({f['file_path']})" for f in scan["results"]["failed_checks"]]
    assert failed == []
    assert scan["summary"]["passed"] > 20


def test_every_custom_policy_ran_and_passed(scan):
    passed = {r["check_id"] for r in scan["results"]["passed_checks"]}
    assert set(CUSTOM_CHECKS) <= passed


def test_every_skip_has_a_reason_and_suppresses_a_real_finding(scan):
    skips = []
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                match = re.search(r"checkov:skip=(CKV2?_[A-Z]+_\d+):(.{10,})", line)
                assert match, f"{path.name}: skip without an ID and a reason: {line.strip()}"
                skips.append(match.group(1))
    suppressed = [r["check_id"] for r in scan["results"]["skipped_checks"]]
    assert sorted(skips) == sorted(suppressed)  # no stale skip of a check that does not apply


@pytest.mark.parametrize("check_id", CUSTOM_CHECKS)
def test_each_custom_policy_fails_its_wrong_sample(check_id):
    sample = next(SAMPLES.glob(f"{check_id.lower()}_*.bicep"))
    report = run_checkov(sample, checks=CUSTOM_CHECKS)
    failed = {r["check_id"] for r in report["results"]["failed_checks"]}
    assert failed == {check_id}


#: Flex Consumption's documented ranges: instance memory sizes, and 40 to 1000 instances.
FLEX_INSTANCE_MEMORY_MB = {512, 2048, 4096}
FLEX_INSTANCE_COUNT = (40, 1000)


def _decorators(text: str, param: str) -> str:
    """The decorator lines directly above ``param <name>``."""
    match = re.search(rf"((?:^@[^\n]*\n|^  [^\n]*\n|^\]\)\n)*)^param {param} (\w+)(?: = (\S+))?$", text, re.MULTILINE)
    assert match, f"param {param} not found"
    return match.group(1) + f"default={match.group(3)}"


@pytest.mark.parametrize("path", [INFRA / "main.bicep", INFRA / "modules" / "function-app.bicep"], ids=lambda p: p.name)
def test_flex_parameters_accept_only_the_documented_ranges(path: Path):
    text = path.read_text()
    memory = _decorators(text, "instanceMemoryMB")
    allowed = re.search(r"@allowed\(\[([^\]]*)\]\)", memory)
    assert allowed, "instanceMemoryMB must list the allowed sizes"
    assert {int(v) for v in allowed.group(1).split()} == FLEX_INSTANCE_MEMORY_MB
    count = _decorators(text, "maximumInstanceCount")
    assert f"@minValue({FLEX_INSTANCE_COUNT[0]})" in count
    assert f"@maxValue({FLEX_INSTANCE_COUNT[1]})" in count
    default = re.search(r"default=(\d+)", count)
    if default:
        assert FLEX_INSTANCE_COUNT[0] <= int(default.group(1)) <= FLEX_INSTANCE_COUNT[1]
    default_memory = re.search(r"default=(\d+)", memory)
    if default_memory:
        assert int(default_memory.group(1)) in FLEX_INSTANCE_MEMORY_MB


def test_no_deprecated_flex_setting_is_set_anywhere():
    """The same list CKV_SAF_5 enforces, checked on the raw text too (a skip could hide the policy)."""
    source = (INFRA / "checks" / "flex_deprecated_settings.py").read_text()
    names = re.findall(r'^        "(\w+)",$', source, re.MULTILINE)
    assert {"ftpsState", "FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE", "alwaysOn"} <= set(names)
    for path in BICEP_FILES:
        words = set(
            re.findall(
                r"\b\w+\b",
                "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("//")),
            )
        )
        assert not words & set(names), f"{path.name}: {sorted(words & set(names))}"


def test_app_settings_are_exactly_the_settings_the_app_reads():
    deployed = app_settings(INFRA / "modules" / "function-app.bicep")
    assert deployed - PLATFORM_SETTINGS == set(SETTINGS) - LOCAL_ONLY_SETTINGS
    assert deployed >= PLATFORM_SETTINGS


def test_every_role_definition_id_is_an_intended_role():
    found = {guid.lower() for path in BICEP_FILES for guid in GUID.findall(path.read_text())}
    assert found == set(ROLES)


def test_role_assignments_use_the_named_roles():
    storage = (INFRA / "modules" / "storage.bicep").read_text()
    monitoring = (INFRA / "modules" / "monitoring.bicep").read_text()
    openai = (INFRA / "modules" / "openai.bicep").read_text()
    cosmos = (INFRA / "modules" / "cosmos.bicep").read_text()
    assert "var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'" in storage
    assert "var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'" in monitoring
    assert "var openAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'" in openai
    assert cosmos.count("/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'") == 2


def test_no_resource_uses_keys_or_secret_connection_strings():
    forbidden = re.compile(
        r"listKeys|listConnectionStrings|listAccountSas|AccountKey=|SharedAccessKey|primaryMasterKey|"
        r"InstrumentationKey=|AZURE_OPENAI_API_KEY|COSMOS_KEY|@secure",
        re.IGNORECASE,
    )
    for path in [*BICEP_FILES, INFRA / "main.parameters.json"]:
        assert not forbidden.search(path.read_text()), path.name
    for module in ("cosmos.bicep", "openai.bicep"):
        assert "disableLocalAuth: true" in (INFRA / "modules" / module).read_text()
    assert "DisableLocalAuth: true" in (INFRA / "modules" / "monitoring.bicep").read_text()
    assert "allowSharedKeyAccess: false" in (INFRA / "modules" / "storage.bicep").read_text()


def test_parameters_file_feeds_azd_variables_to_main_bicep():
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters == {
        "environmentName": {"value": "${AZURE_ENV_NAME}"},
        "location": {"value": "${AZURE_LOCATION}"},
        "principalId": {"value": "${AZURE_PRINCIPAL_ID}"},
        "postgresHost": {"value": "${AZURE_POSTGRES_HOST=}"},  # empty unless set: Cosmos DB
    }
    main = (INFRA / "main.bicep").read_text()
    assert all(re.search(rf"^param {name} ", main, re.MULTILINE) for name in parameters)


def test_main_outputs_what_azd_and_the_readme_use():
    main = (INFRA / "main.bicep").read_text()
    outputs = set(re.findall(r"^output (\w+) ", main, re.MULTILINE))
    assert {
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_FUNCTION_APP_URL",
        "COSMOS_ENDPOINT",
        "AZURE_OPENAI_ENDPOINT",
        "POSTGRES_ROLE",
    } <= outputs
    readme = (ROOT / "README.md").read_text()
    assert all(name in readme for name in ("AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_APP_URL", "COSMOS_ENDPOINT"))


def test_azure_yaml_deploys_one_python_function_service():
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r"^services:\n  api:\n", text, re.MULTILINE)
    assert "    language: python\n" in text
    assert "    host: function\n" in text
    assert "'azd-service-name': 'api'" in (INFRA / "modules" / "function-app.bicep").read_text()


def test_the_container_matches_what_the_cosmos_store_creates_and_queries():
    """Partition key and indexing policy: the deployed container and the store's own (local) one are the same."""
    from stateful_agent.stores.cosmos import INDEXING_POLICY, PARTITION_KEY_PATHS

    cosmos = (INFRA / "modules" / "cosmos.bicep").read_text()
    partition = re.search(r"partitionKey: \{\s*paths: \[([^\]]*)\]\s*kind: '(\w+)'", cosmos)
    assert partition, "the container has no partitionKey block"
    assert re.findall(r"'([^']+)'", partition.group(1)) == PARTITION_KEY_PATHS
    assert partition.group(2) == "MultiHash"
    policy = cosmos[cosmos.index("indexingPolicy: {") : cosmos.index("options:")]
    included = policy[policy.index("includedPaths") : policy.index("excludedPaths")]
    excluded = policy[policy.index("excludedPaths") : policy.index("compositeIndexes")]
    composite = policy[policy.index("compositeIndexes") :]
    assert re.findall(r"path: '([^']+)'", included) == [p["path"] for p in INDEXING_POLICY["includedPaths"]]
    assert re.findall(r"path: '([^']+)'", excluded) == [p["path"] for p in INDEXING_POLICY["excludedPaths"]]
    assert re.findall(r"path: '([^']+)'\s*order: '(\w+)'", composite) == [
        (p["path"], p["order"]) for index in INDEXING_POLICY["compositeIndexes"] for p in index
    ]


def test_easy_auth_is_configured_only_when_an_app_registration_is_given():
    main = (INFRA / "main.bicep").read_text()
    module = (INFRA / "modules" / "function-app.bicep").read_text()
    assert re.search(r"^param authClientId string = ''$", main, re.MULTILINE)  # off by default
    assert "    authClientId: authClientId\n" in main
    assert "var easyAuth = !empty(authClientId)" in module
    assert re.search(r"^resource \w+ 'Microsoft\.Web/sites/config@[\d-]+' = if \(easyAuth\) \{\n", module, re.MULTILINE)
    assert module.count("name: 'authsettingsV2'") == 1
    assert "AUTH_MODE: easyAuth ? 'easyauth' : 'none'" in module
    auth = module[module.index("name: 'authsettingsV2'") : module.index("resource ftpPublishing")]
    # the page signs in itself; the A2A agent card is public by the protocol
    excluded = ["'/api/health'", "'/api/ui'", "'/api/.well-known/agent-card.json'"]
    assert "excludedPaths: [\n" + "".join(f"        {path}\n" for path in excluded) + "      ]" in auth
    assert "clientSecret" not in auth  # keyless: bearer tokens need no secret


def test_functions_export_opentelemetry_from_host_and_worker_keylessly():
    """The documented Flex Consumption path: host telemetryMode OpenTelemetry, the Python worker's own export on."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    module = (INFRA / "modules" / "function-app.bicep").read_text()
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'" in module
    assert "ENABLE_SENSITIVE_DATA: 'false'" in module
    assert "APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'" in module
    assert "DisableLocalAuth: true" in (INFRA / "modules" / "monitoring.bicep").read_text()


def test_an_existing_postgres_server_replaces_cosmos_and_is_reached_without_a_password():
    main = (INFRA / "main.bicep").read_text()
    assert "var useCosmos = empty(postgresHost)" in main
    assert re.search(r"^module cosmos 'modules/cosmos.bicep' = if \(useCosmos\)", main, re.MULTILINE)
    (dsn,) = re.findall(r"^\s*postgresDsn: (.+)$", main, re.MULTILINE)
    assert "sslmode=require" in dsn
    assert "user=${identity.outputs.name}" in dsn
    assert "password" not in dsn.lower()  # Microsoft Entra tokens of the managed identity
    assert "sessionBackend: useCosmos ? 'cosmos' : 'postgres'" in main
    module = (INFRA / "modules" / "function-app.bicep").read_text()
    assert "MAF_SESSION_BACKEND: sessionBackend" in module
