"""The service's own commands (`vidclass db|keys|worker|api|up|flower|export-labels`), above api/ and worker/."""
