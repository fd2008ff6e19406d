"""CKV_SAF_5: a Flex Consumption function app sets none of the site properties and app settings Flex deprecates.

Microsoft's "Flex Consumption plan deprecations" (Azure Functions app settings reference) lists site
properties and app settings that Flex Consumption does not support or has moved into
``properties.functionAppConfig``; ARM rejects some of them outright (``ftpsState``), so a template that
sets one can fail to create the site. This template deploys Flex Consumption only, so every
``Microsoft.Web/sites/config`` (app settings, web config) is held to the same list.
"""

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

from _base import path

#: Site properties (under ``properties`` or ``properties.siteConfig``), compared case-insensitively.
DEPRECATED_SITE_PROPERTIES = frozenset(
    name.lower()
    for name in (
        "ftpsState",
        "use32BitWorkerProcess",
        "alwaysOn",
        "isReserved",
        "isXenon",
        "windowsFxVersion",
        "linuxFxVersion",
        "preWarmedInstanceCount",
        "functionAppScaleLimit",
        "containerSize",
        "javaVersion",
        "powerShellVersion",
        "netFrameworkVersion",
        "vnetBackupRestoreEnabled",
        "vnetContentShareEnabled",
        "vnetImagePullEnabled",
        "vnetRouteAllEnabled",
    )
)

#: App settings, compared case-insensitively (Azure app setting names are).
DEPRECATED_APP_SETTINGS = frozenset(
    name.lower()
    for name in (
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_WORKER_RUNTIME_VERSION",
        "FUNCTIONS_EXTENSION_VERSION",
        "FUNCTIONS_MAX_HTTP_CONCURRENCY",
        "FUNCTIONS_WORKER_PROCESS_COUNT",
        "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTSHARE",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "WEBSITE_CONTENTOVERVNET",
        "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
        "WEBSITE_NODE_DEFAULT_VERSION",
        "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
        "WEBSITE_DNS_SERVER",
        "WEBSITE_VNET_ROUTE_ALL",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "ENABLE_ORYX_BUILD",
    )
)


class FlexConsumptionDeprecatedSettings(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure Flex Consumption function apps set no deprecated site property or app setting",
            id="CKV_SAF_5",
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_resources=("Microsoft.Web/sites", "Microsoft.Web/sites/config"),
        )

    def scan_resource_conf(self, conf):
        properties = path(conf, "properties")
        if not isinstance(properties, dict):
            return CheckResult.PASSED
        if self.entity_type == "Microsoft.Web/sites/config":  # set by checkov before each scan
            self.evaluated_keys = ["properties"]
            return CheckResult.FAILED if _deprecated(properties) else CheckResult.PASSED
        if not isinstance(properties.get("functionAppConfig"), dict):
            return CheckResult.UNKNOWN  # not a Flex Consumption app
        self.evaluated_keys = ["properties", "properties/siteConfig"]
        site_config = properties.get("siteConfig")
        found = _deprecated(properties) or (isinstance(site_config, dict) and _deprecated(site_config))
        return CheckResult.FAILED if found else CheckResult.PASSED


def _deprecated(properties: dict) -> bool:
    """Whether ``properties`` (a site, its siteConfig, or a sites/config body) holds a deprecated name."""
    names = {str(key).lower() for key in properties}
    if names & (DEPRECATED_SITE_PROPERTIES | DEPRECATED_APP_SETTINGS):
        return True
    listed = properties.get("appSettings")  # siteConfig.appSettings: [{name, value}]
    if isinstance(listed, list):
        return any(
            isinstance(item, dict) and str(item.get("name", "")).lower() in DEPRECATED_APP_SETTINGS for item in listed
        )
    return False


check = FlexConsumptionDeprecatedSettings()
