resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-sample'
  location: 'westeurope'
  kind: 'web'
  properties: {
    Application_Type: 'web'
    DisableLocalAuth: false
  }
}
