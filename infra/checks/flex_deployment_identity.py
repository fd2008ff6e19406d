"""CKV_SAF_4: a Flex Consumption function app deploys from a blob container with a user-assigned identity."""

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

from _base import path


class FlexDeploymentStorageUsesIdentity(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure Flex Consumption apps use identity-based deployment storage",
            id="CKV_SAF_4",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.Web/sites",),
        )

    def scan_resource_conf(self, conf):
        kind = path(conf, "kind")
        if not (isinstance(kind, str) and "functionapp" in kind):
            return CheckResult.UNKNOWN
        self.evaluated_keys = ["properties/functionAppConfig"]
        storage = path(conf, "properties", "functionAppConfig", "deployment", "storage")
        if not isinstance(storage, dict):
            return CheckResult.FAILED
        authentication = storage.get("authentication")
        if not isinstance(authentication, dict):
            return CheckResult.FAILED
        if (
            storage.get("type") == "blobContainer"
            and authentication.get("type") == "UserAssignedIdentity"
            and authentication.get("userAssignedIdentityResourceId")
            and path(conf, "properties", "functionAppConfig", "runtime", "name")
        ):
            return CheckResult.PASSED
        return CheckResult.FAILED


check = FlexDeploymentStorageUsesIdentity()
