// Cosmos DB for NoSQL: serverless by default, Entra ID only (local auth off), Session consistency.
// The sessions container is partitioned by /session_id, allows per-item TTL, and indexes only the
// paths queries use: the snapshot payload is never indexed.
param name string
param location string
param tags object
param databaseName string
param containerName string
param serverless bool
param throughput int
param identityPrincipalId string
param userPrincipalId string

// Built-in data-plane role "Cosmos DB Built-in Data Contributor" (written out below so scanners can read it).
var dataContributor = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    // checkov:skip=CKV_AZURE_101:The app on Flex Consumption without VNet integration reaches Cosmos DB over its public endpoint; access needs Entra ID (local auth is off).
    // checkov:skip=CKV_AZURE_99:The account is reached over its public endpoint with Entra ID; IP rules or private endpoints need a VNet this template does not create.
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: serverless ? [
      {
        name: 'EnableServerless'
      }
    ] : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      // Hierarchical: a user's sessions share the first level (listing is one prefix query), each session is
      // its own logical partition (no 20 GB or hot-partition limit per user, nor for AUTH_MODE=none's shared owner).
      partitionKey: {
        paths: [
          '/owner'
          '/session_id'
        ]
        kind: 'MultiHash'
        version: 2
      }
      defaultTtl: -1
      // The same policy as INDEXING_POLICY in stateful_agent/stores/cosmos.py (tests/test_infra.py compares them).
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/owner/?'
          }
          {
            path: '/session_id/?'
          }
          {
            path: '/kind/?'
          }
          {
            path: '/updated_at/?'
          }
        ]
        excludedPaths: [
          {
            path: '/*'
          }
        ]
        compositeIndexes: [
          [
            {
              path: '/updated_at'
              order: 'descending'
            }
            {
              path: '/session_id'
              order: 'descending'
            }
          ]
        ]
      }
    }
    options: serverless ? {} : {
      throughput: throughput
    }
  }
}

resource appDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(account.id, identityPrincipalId, dataContributor)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002' // Built-in Data Contributor
    principalId: identityPrincipalId
    scope: account.id
  }
}

resource userDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = if (!empty(userPrincipalId)) {
  parent: account
  name: guid(account.id, userPrincipalId, dataContributor)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002' // Built-in Data Contributor
    principalId: userPrincipalId
    scope: account.id
  }
}

output endpoint string = account.properties.documentEndpoint
output name string = account.name
