param name string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  properties: {
    allowSharedKeyAccess: false
  
}
