"""CKV_SAF_3: Cosmos DB data-plane role assignments grant the built-in Data Contributor, account-scoped.

With local (key) auth off, a data-plane SQL role assignment is the only way in. Least privilege: the
app needs read/write on items, which is the built-in Data Contributor; nothing custom or broader.
"""

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

from _base import path

DATA_CONTRIBUTOR = "/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"


class CosmosDataPlaneRoleIsDataContributor(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure Cosmos DB data-plane role assignments use the built-in Data Contributor",
            id="CKV_SAF_3",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",),
        )

    def scan_resource_conf(self, conf):
        self.evaluated_keys = ["properties/roleDefinitionId", "properties/principalId", "properties/scope"]
        role = path(conf, "properties", "roleDefinitionId")
        principal = path(conf, "properties", "principalId")
        scope = path(conf, "properties", "scope")
        if isinstance(role, str) and role.endswith(DATA_CONTRIBUTOR) and principal and scope:
            return CheckResult.PASSED
        return CheckResult.FAILED


check = CosmosDataPlaneRoleIsDataContributor()
