include:
  - vmigrate.nfs.server
  - vmigrate.nfs.client
