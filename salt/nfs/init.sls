include:
  - nfs.server
  - nfs.client
