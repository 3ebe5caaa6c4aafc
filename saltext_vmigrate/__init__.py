"""saltext-vmigrate: the Salt loader finds modules/, states/, runners/, beacons/ beside this
file (the ``salt.loader`` entry point names this package); utils/ is imported as plain Python;
sls/ holds the SLS tree (``migrate.sls``, ``evacuate.sls``, ``vmigrate/``) that a master lists
in file_roots (``salt-run vmigrate.version`` names the path)."""
