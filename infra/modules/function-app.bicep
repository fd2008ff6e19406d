// The function app on the Flex Consumption plan (FC1, Linux): HTTPS only, FTP off, TLS 1.2, and the
// user-assigned identity for the host storage, the deployment package, Cosmos DB, OpenAI and telemetry.
param name string
param planName string
param location string
param tags object
param pythonVersion string
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int
param identityId string
param identityClientId string
param storageBlobEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string
@allowed([
  'cosmos'
  'postgres'
])
param sessionBackend string
param cosmosEndpoint string
@description('libpq connection string of the PostgreSQL backend, without a password (Entra ID); empty with Cosmos DB.')
param postgresDsn string
param cosmosDatabase string
param cosmosContainer string
param sessionTtlSeconds int
param openAiEndpoint string
param openAiDeploymentName string
param openAiApiVersion string
@minValue(0)
@description('Most tokens one model call may write; 0 = the model\'s own limit.')
param modelMaxOutputTokens int
param agentName string
param agentInstructions string
@description('The agent\'s tools: comma-separated module:attribute references; empty = none.')
param agentTools string
@description('Remote MCP servers (AGENT_MCP_SERVERS JSON); empty = none.')
param agentMcpServers string
@description('The public URL of the app\'s routes, route prefix included (PUBLIC_BASE_URL); empty = the default host name\'s.')
param publicBaseUrl string
@description('Client id of an existing Entra app registration; empty = no App Service Authentication.')
param authClientId string

var easyAuth = !empty(authClientId)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is regional and billed as always-ready instances; enable it per region when needed.
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_212:Scale to zero is intended (no idle cost); Flex Consumption adds instances on demand.
    // checkov:skip=CKV_AZURE_213:Flex Consumption has no App Service health check; /api/health serves external availability probes.
    // checkov:skip=CKV_AZURE_17:Client certificates are not used; callers authenticate with function keys.
    // checkov:skip=CKV_AZURE_222:The HTTP API is public by design; restrict it with access restrictions or a VNet where needed.
    // checkov:skip=CKV_AZURE_78:Flex Consumption deprecates siteConfig.ftpsState (ARM rejects it); FTP is off through the ftp publishing-credentials policy below.
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// The app settings: the host's identity-based connections, then exactly the settings the app reads
// (stateful_agent/settings.py; tests/test_infra.py keeps the two in step). No keys anywhere.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // This resource holds app settings only; checkov reads every sites/config as the 'web' config:
    // checkov:skip=CKV_AZURE_13:Not a 'web' config. Callers authenticate with function keys.
    // checkov:skip=CKV_AZURE_63:Not a 'web' config. HTTP logs go to Application Insights.
    // checkov:skip=CKV_AZURE_65:Not a 'web' config. Errors are logged to Application Insights, never sent to clients.
    // checkov:skip=CKV_AZURE_66:Not a 'web' config. Request traces go to Application Insights.
    // checkov:skip=CKV_AZURE_80:Not a 'web' config. The app runs Python, not .NET.
    // checkov:skip=CKV_AZURE_88:Not a 'web' config. The app keeps no state on Azure Files.
    // checkov:skip=CKV_AZURE_222:Not a 'web' config. The HTTP API is public by design.
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    PYTHON_ENABLE_INIT_INDEXING: '1'
    // host.json telemetryMode=OpenTelemetry: the worker exports its own spans, correlated with the host's.
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    OTEL_SERVICE_NAME: 'stateful-agent'
    ENABLE_SENSITIVE_DATA: 'false'
    AUTH_MODE: easyAuth ? 'easyauth' : 'none'
    AUTH_USER_HEADER: 'X-User-Id'
    MAF_SESSION_BACKEND: sessionBackend
    COSMOS_ENDPOINT: cosmosEndpoint
    COSMOS_DATABASE: cosmosDatabase
    COSMOS_CONTAINER: cosmosContainer
    POSTGRES_DSN: postgresDsn
    POSTGRES_POOL_SIZE: '5'
    SESSION_TTL_SECONDS: string(sessionTtlSeconds)
    MAX_MESSAGE_BYTES: '32768'
    MAX_SNAPSHOT_BYTES: '1572864'
    SESSION_CACHE_MB: '32'
    COMPACTION_STRATEGY: 'messages'
    COMPACTION_MAX_MESSAGES: '40'
    COMPACTION_TOKEN_BUDGET: '8000'
    IDEMPOTENCY_KEYS: '50'
    MODEL_PROVIDER: 'azure_openai'
    AZURE_OPENAI_ENDPOINT: openAiEndpoint
    AZURE_OPENAI_MODEL: openAiDeploymentName
    AZURE_OPENAI_API_VERSION: openAiApiVersion
    MODEL_TIMEOUT_SECONDS: '60'
    MODEL_MAX_RETRIES: '2'
    MODEL_MAX_OUTPUT_TOKENS: modelMaxOutputTokens > 0 ? string(modelMaxOutputTokens) : ''
    SSE_KEEPALIVE_SECONDS: '15'
    CHAT_UI: 'true'
    AGENT_NAME: agentName
    AGENT_TOOLS: agentTools
    AGENT_MCP_SERVERS: agentMcpServers
    PUBLIC_BASE_URL: publicBaseUrl
    AGENT_INSTRUCTIONS: agentInstructions
    AZURE_CLIENT_ID: identityClientId
    // The app registration that Easy Auth validates tokens for: MCP servers with auth 'caller' get tokens on the
    // caller's behalf as this registration, which trusts the managed identity (docs/tools.md). Never a secret.
    AUTH_CLIENT_ID: authClientId
    AUTH_TENANT_ID: easyAuth ? tenant().tenantId : ''
  }
}

// App Service Authentication (Easy Auth) with Microsoft Entra ID, only when an app registration is given: every
// request but /api/health needs a valid token for the app (401 otherwise), and Easy Auth injects the caller's
// X-MS-CLIENT-PRINCIPAL-* headers, which the app then trusts (WEBSITE_AUTH_ENABLED). Keyless: API calls carry
// bearer tokens, which need no client secret; browser sign-in would need one and is not configured here.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (easyAuth) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    // This resource is the authentication configuration; checkov reads every sites/config as the 'web' config:
    // checkov:skip=CKV_AZURE_13:Not a 'web' config: this resource is the App Service Authentication itself.
    // checkov:skip=CKV_AZURE_63:Not a 'web' config. HTTP logs go to Application Insights.
    // checkov:skip=CKV_AZURE_65:Not a 'web' config. Errors are logged to Application Insights, never sent to clients.
    // checkov:skip=CKV_AZURE_66:Not a 'web' config. Request traces go to Application Insights.
    // checkov:skip=CKV_AZURE_80:Not a 'web' config. The app runs Python, not .NET.
    // checkov:skip=CKV_AZURE_88:Not a 'web' config. The app keeps no state on Azure Files.
    // checkov:skip=CKV_AZURE_222:Not a 'web' config. The HTTP API is public by design, behind Easy Auth.
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      // The health probe; the chat page, which holds no data and signs the user in itself; the public A2A agent card.
      excludedPaths: [
        '/api/health'
        '/api/ui'
        '/api/.well-known/agent-card.json'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
