"""CKV_SAF_1: Application Insights accepts Entra ID telemetry only (no instrumentation-key ingestion)."""

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

from _base import path


class AppInsightsLocalAuthDisabled(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure Application Insights disables local authentication",
            id="CKV_SAF_1",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.Insights/components",),
        )

    def scan_resource_conf(self, conf):
        self.evaluated_keys = ["properties/DisableLocalAuth"]
        return CheckResult.PASSED if path(conf, "properties", "DisableLocalAuth") is True else CheckResult.FAILED


check = AppInsightsLocalAuthDisabled()
