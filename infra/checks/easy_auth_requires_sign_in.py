"""CKV_SAF_6: App Service Authentication (authsettingsV2) refuses anonymous API calls and holds no secret.

When the template turns on Easy Auth, the app trusts the identity headers Easy Auth injects and scopes every
session to its caller, so Easy Auth must really stand in front of the API: enabled, authentication required,
401 for unauthenticated calls (an API has no login page to redirect to), and keyless (bearer tokens need no
client secret; a secret setting or certificate would be a key to manage).
"""

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

from _base import path

SECRETS = (
    "clientSecretSettingName",
    "clientSecretCertificateThumbprint",
    "clientSecretCertificateSubjectAlternativeName",
)


class EasyAuthRequiresSignIn(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure App Service Authentication requires sign-in, answers 401 and uses no client secret",
            id="CKV_SAF_6",
            categories=(CheckCategories.IAM,),
            supported_resources=("Microsoft.Web/sites/config",),
        )

    def scan_resource_conf(self, conf):
        if path(conf, "name") != "authsettingsV2":
            return CheckResult.UNKNOWN
        self.evaluated_keys = ["properties/platform", "properties/globalValidation", "properties/identityProviders"]
        registration = path(conf, "properties", "identityProviders", "azureActiveDirectory", "registration")
        if (
            path(conf, "properties", "platform", "enabled") is True
            and path(conf, "properties", "globalValidation", "requireAuthentication") is True
            and path(conf, "properties", "globalValidation", "unauthenticatedClientAction") == "Return401"
            and path(conf, "properties", "identityProviders", "azureActiveDirectory", "enabled") is True
            and isinstance(registration, dict)
            and registration.get("clientId")
            and not any(registration.get(secret) for secret in SECRETS)
        ):
            return CheckResult.PASSED
        return CheckResult.FAILED


check = EasyAuthRequiresSignIn()
