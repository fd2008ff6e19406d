"""CKV_SAF_2: storage accounts refuse shared-key (account key and SAS) access."""

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

from _base import path


class StorageSharedKeyAccessDisabled(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure storage accounts disallow shared key access",
            id="CKV_SAF_2",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.Storage/storageAccounts",),
        )

    def scan_resource_conf(self, conf):
        self.evaluated_keys = ["properties/allowSharedKeyAccess"]
        allowed = path(conf, "properties", "allowSharedKeyAccess")
        return CheckResult.PASSED if allowed is False else CheckResult.FAILED


check = StorageSharedKeyAccessDisabled()
