// Everything the stateful agent needs in Azure, keyless end to end:
// `azd up`, or `az deployment sub create --location <region> --template-file infra/main.bicep
//  --parameters environmentName=<name> location=<region>`.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment; it seeds the resource names and the resource group name.')
param environmentName string

@minLength(1)
@description('Region of every resource (Flex Consumption and the model must be available there).')
param location string

@description('Object id of the deploying user: gets data-plane access to Cosmos DB and OpenAI for local runs. Empty = none.')
param principalId string = ''

@allowed([
  '3.11'
  '3.12'
])
@description('Python version of the function app.')
param pythonVersion string = '3.11'

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB (the sizes Flex Consumption offers).')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to (Flex Consumption accepts 40 to 1000).')
param maximumInstanceCount int = 40

@description('Serverless Cosmos DB (pay per request; nothing when idle). false = provisioned throughput.')
param cosmosServerless bool = true

@minValue(400)
@description('Container throughput (RU/s) when cosmosServerless is false.')
param cosmosThroughput int = 400

@description('Host name of an existing Azure Database for PostgreSQL flexible server with Microsoft Entra authentication, e.g. myserver.postgres.database.azure.com. Set: sessions are stored there (MAF_SESSION_BACKEND=postgres) and no Cosmos DB account is created; the README lists the role and network steps. Empty = Cosmos DB.')
param postgresHost string = ''

@description('Database on postgresHost that holds the sessions (its schema is created with `python -m stateful_agent.stores.postgres migrate`).')
param postgresDatabase string = 'agents'

@description('Seconds an idle session is kept; -1 = forever.')
param sessionTtlSeconds int = -1

@description('Endpoint of an existing Azure OpenAI resource to use instead of creating one (grant the app identity "Cognitive Services OpenAI User" on it). Empty = create one.')
param existingOpenAiEndpoint string = ''

@description('Chat model deployment name (also the name used with an existing endpoint).')
param openAiDeploymentName string = 'chat'

@description('Model of the chat deployment.')
param openAiModelName string = 'gpt-4o-mini'

@description('Version of the model; must be one the region still offers for new deployments (README: Deploy to Azure).')
param openAiModelVersion string = '2024-07-18'

@description('Deployment SKU, e.g. GlobalStandard or Standard.')
param openAiSkuName string = 'GlobalStandard'

@description('Deployment capacity, in thousands of tokens per minute.')
param openAiCapacity int = 10

@description('Azure OpenAI API version the app uses; empty = the Agent Framework default.')
param openAiApiVersion string = ''

@minValue(0)
@maxValue(1000000)
@description('Most tokens one model call may write (MODEL_MAX_OUTPUT_TOKENS, sent as max_completion_tokens); 0 = the model\'s own limit.')
param modelMaxOutputTokens int = 0

@description('The agent\'s tools, as AGENT_TOOLS: comma-separated module:attribute references, e.g. samples.tools:TOOLS. Empty = none.')
param agentTools string = ''

@description('Remote MCP servers whose tools the agent uses, as AGENT_MCP_SERVERS: VS Code mcp.json JSON, {"servers": {"<name>": {"type": "http", "url": "https://..."}}}; secrets as \${env:NAME} references to app settings, never inline. Empty = none.')
param agentMcpServers string = ''

@description('The public URL the app\'s routes are served under, route prefix included (a custom domain or a gateway), e.g. https://agents.contoso.com/api, as PUBLIC_BASE_URL. Empty = https://<default host name>/api.')
param publicBaseUrl string = ''

@description('Client id of an existing Microsoft Entra app registration. Set: App Service Authentication (Easy Auth) requires a signed-in user on every API call but /api/health, and each session belongs to its user (AUTH_MODE=easyauth). Empty: function keys, sessions shared (AUTH_MODE=none).')
param authClientId string = ''

@description('The agent\'s name.')
param agentName string = 'assistant'

@description('The agent\'s system instructions.')
param agentInstructions string = 'You are a helpful assistant. Answer concisely.'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var deploymentContainerName = 'app-package-${resourceToken}'
var createOpenAi = empty(existingOpenAiEndpoint)
// Sessions with owners, partitioned by [/owner, /session_id]. A partition key cannot change in place, so this
// is a new container; one made by an earlier version ('sessions', partitioned by /session_id) is left as it is.
var containerName = 'conversations'
var useCosmos = empty(postgresHost)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    deploymentContainerName: deploymentContainerName
  }
}

module cosmos 'modules/cosmos.bicep' = if (useCosmos) {
  name: 'cosmos'
  scope: rg
  params: {
    name: '${abbrs.documentDBDatabaseAccounts}${resourceToken}'
    location: location
    tags: tags
    databaseName: 'agents'
    containerName: containerName
    serverless: cosmosServerless
    throughput: cosmosThroughput
    identityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

module openAi 'modules/openai.bicep' = if (createOpenAi) {
  name: 'openai'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentName: openAiDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    skuName: openAiSkuName
    capacity: openAiCapacity
    identityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

var openAiEndpoint = createOpenAi ? openAi.outputs.endpoint : existingOpenAiEndpoint

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: '${abbrs.webSitesFunctions}${resourceToken}'
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    sessionBackend: useCosmos ? 'cosmos' : 'postgres'
    cosmosEndpoint: useCosmos ? cosmos.outputs.endpoint : ''
    // No password: the app signs in with a Microsoft Entra token of its identity, whose name is the role.
    postgresDsn: useCosmos ? '' : 'host=${postgresHost} port=5432 dbname=${postgresDatabase} user=${identity.outputs.name} sslmode=require'
    cosmosDatabase: 'agents'
    cosmosContainer: containerName
    sessionTtlSeconds: sessionTtlSeconds
    openAiEndpoint: openAiEndpoint
    openAiDeploymentName: openAiDeploymentName
    openAiApiVersion: openAiApiVersion
    modelMaxOutputTokens: modelMaxOutputTokens
    agentName: agentName
    agentInstructions: agentInstructions
    agentTools: agentTools
    agentMcpServers: agentMcpServers
    publicBaseUrl: publicBaseUrl
    authClientId: authClientId
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output COSMOS_ENDPOINT string = useCosmos ? cosmos.outputs.endpoint : ''
output POSTGRES_ROLE string = useCosmos ? '' : identity.outputs.name
output COSMOS_DATABASE string = 'agents'
output COSMOS_CONTAINER string = containerName
output AZURE_OPENAI_ENDPOINT string = openAiEndpoint
output AZURE_OPENAI_MODEL string = openAiDeploymentName
