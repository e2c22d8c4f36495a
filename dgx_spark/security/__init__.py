"""Who may see and change what: Host/Origin checks, token auth, redaction, audit."""
