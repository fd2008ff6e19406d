param planId string
param storageConnection string

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-sample'
  location: 'westeurope'
  kind: 'functionapp,linux'
  properties: {
    serverFarmId: planId
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: 'https://stsample.blob.core.windows.net/package'
          authentication: {
            type: 'StorageAccountConnectionString'
            storageAccountConnectionStringName: storageConnection
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}
