// Azure OpenAI with local (key) auth off and one chat model deployment; the identity may call it.
param name string
param location string
param tags object
param deploymentName string
param modelName string
param modelVersion string
param skuName string
param capacity int
param identityPrincipalId string
param userPrincipalId string

var openAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    // checkov:skip=CKV_AZURE_134:The model is reached over its public endpoint with Entra ID; private endpoints need a VNet this template does not create.
    // checkov:skip=CKV_AZURE_238:Microsoft-managed keys; customer-managed keys need a Key Vault this template does not create.
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource chat 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
  }
}

resource appUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, openAiUser)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUser)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource developerUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(account.id, userPrincipalId, openAiUser)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUser)
    principalId: userPrincipalId // a user or, in CI, a service principal: the type is left to Azure
  }
}

output endpoint string = account.properties.endpoint
output deploymentName string = chat.name
